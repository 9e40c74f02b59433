"""The findings records: Project, Run, Resource and Finding (seed 000, schema 1.0.0).

These are the edge models: what the store returns, what the exporters write and what
``schemas/finding.json`` describes. They are frozen and refuse unknown fields, so a typo
in a stored or imported document is an error instead of a silently dropped value.

Invariants kept here or by the store:

- a finding belongs to a run of its project: :func:`check_run_of_project` refuses a
  finding whose run (first or last) is of another project;
- its fingerprint is stable across imports of the same result
  (:mod:`aifr.findings.fingerprint` says which fields form it), and its id is derived from
  the project and the fingerprint (:func:`finding_id`), so importing the same file twice
  updates one finding (``last_seen``, ``occurrences``) instead of adding a second.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, model_validator

from aifr.errors import FindingsError
from aifr.findings.severity import Severity

__all__ = [
    "FINDING_SCHEMA_VERSION",
    "Finding",
    "Project",
    "Resource",
    "ResourceKind",
    "Run",
    "TriageState",
    "check_run_of_project",
    "finding_id",
]

FINDING_SCHEMA_VERSION = "1.0.0"

_FROZEN = ConfigDict(frozen=True, extra="forbid")

# Ids a user types on the command line (--project P, --run R): no spaces, no slashes.
Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
Fingerprint = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Text = Annotated[str, Field(min_length=1)]
Port = Annotated[int, Field(ge=0, le=65535)]
Score = Annotated[float, Field(ge=0.0, le=10.0)]


class TriageState(StrEnum):
    """Where a person's review of a finding stands."""

    OPEN = "open"
    ACCEPTED = "accepted"
    FALSE_POSITIVE = "false_positive"
    FIXED = "fixed"


class ResourceKind(StrEnum):
    """What a registered scan target is."""

    HOST = "host"
    URL = "url"
    CIDR = "cidr"
    REPOSITORY = "repository"


class Project(BaseModel):
    """A body of security work: its runs, resources and findings are deleted together."""

    model_config = _FROZEN

    id: Ident
    name: Text
    description: str = ""
    created_at: AwareDatetime


class Run(BaseModel):
    """One scan or one import of scanner output into a project."""

    model_config = _FROZEN

    id: Ident
    project_id: Ident
    scanner: str | None = None
    scanner_version: str | None = None
    source: str | None = Field(default=None, description="File imported or command run.")
    started_at: AwareDatetime
    finished_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _finish_after_start(self) -> Self:
        if self.finished_at is not None and self.finished_at < self.started_at:
            raise ValueError("finished_at is before started_at")
        return self


class Resource(BaseModel):
    """A target of a project's scans (host, URL, CIDR, repository) that findings link to."""

    model_config = _FROZEN

    id: Ident
    project_id: Ident
    kind: ResourceKind
    value: Text
    name: str | None = None
    created_at: AwareDatetime


class Finding(BaseModel):
    """One result a scanner reported, deduplicated by fingerprint within its project.

    Location fields are flat (``url``, ``host``, ``port``...) so every store can filter on
    them and CSV can show them; ``evidence`` holds what the scanner observed (request,
    response, status, headers...), ``rule_metadata`` what the template or tool says about
    the rule, and ``raw`` every field of the scanner's record that aifr did not map.
    """

    model_config = _FROZEN

    id: Ident
    project_id: Ident
    run_id: Ident = Field(description="The run that first reported this finding.")
    last_run_id: Ident = Field(description="The latest run that reported it.")
    scanner: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    scanner_generation: Text = Field(description="Output format generation, from its keys.")
    scanner_version: str | None = None
    rule_id: Text = Field(description="Template id (nuclei) or the tool's rule name.")
    title: Text
    description: str | None = None
    severity: Severity
    scanner_severity: str | None = Field(
        default=None, description="The severity as the scanner wrote it, before mapping."
    )
    cvss_score: Score | None = None
    cvss_vector: str | None = None
    url: str | None = None
    host: str | None = None
    port: Port | None = None
    scheme: str | None = None
    path: str | None = None
    method: str | None = None
    matched_at: str | None = None
    ip: str | None = None
    resource_id: Ident | None = None
    matcher_name: str | None = None
    extractor_name: str | None = None
    extracted_results: tuple[str, ...] = ()
    status_code: int | None = None
    evidence: dict[str, JsonValue] = Field(default_factory=dict)
    references: tuple[str, ...] = ()
    cwe: tuple[str, ...] = ()
    cve: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    remediation: str | None = None
    rule_url: str | None = None
    rule_metadata: dict[str, JsonValue] = Field(default_factory=dict)
    observed_at: AwareDatetime | None = Field(
        default=None, description="When the scanner reported it (its own timestamp)."
    )
    first_seen: AwareDatetime
    last_seen: AwareDatetime
    occurrences: Annotated[int, Field(ge=1)] = 1
    fingerprint: Fingerprint
    triage_state: TriageState = TriageState.OPEN
    raw: dict[str, JsonValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _seen_in_order(self) -> Self:
        if self.last_seen < self.first_seen:
            raise ValueError("last_seen is before first_seen")
        return self


def finding_id(project_id: str, fingerprint: str) -> str:
    """The id of the finding with this fingerprint in this project (32 hex characters).

    Derived, not random, so a re-import finds the existing finding without a lookup and
    two stores given the same input agree on ids.
    """
    return hashlib.sha256(f"{project_id}\x1f{fingerprint}".encode()).hexdigest()[:32]


def check_run_of_project(finding: Finding, runs: dict[str, Run]) -> None:
    """Refuse a finding whose first or last run is unknown or of another project.

    Raises:
        FindingsError: ``findings.invalid`` naming the run and both projects.
    """
    for field in ("run_id", "last_run_id"):
        run_id: str = getattr(finding, field)
        run = runs.get(run_id)
        if run is None:
            raise FindingsError(
                f"finding {finding.id}: {field} {run_id!r} is not a run of project "
                f"{finding.project_id!r}",
                finding_id=finding.id,
                run_id=run_id,
                project_id=finding.project_id,
            )
        if run.project_id != finding.project_id:
            raise FindingsError(
                f"finding {finding.id} of project {finding.project_id!r}: {field} "
                f"{run_id!r} belongs to project {run.project_id!r}",
                finding_id=finding.id,
                run_id=run_id,
                project_id=finding.project_id,
                run_project_id=run.project_id,
            )
