"""What the findings part needs from storage: the ``StoragePort`` and the ``ResourceRegistry``.

``StoragePort`` keeps the seed's six operations under their exact names (``atomic_write``,
``validate_store_layout``, ``get_schema_version``, ``save_finding``, ``list_findings``,
``delete_project``) and adds the verbs the CLI, the scanners and MCP need: projects,
runs, one finding, many findings in one transaction, triage with its history, and the
explicit migration a schema change asks for. Adapters live in ``aifr.storage``
(memory, SQLite, PostgreSQL) and pass one contract suite.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from aifr.findings.models import Finding, Project, Resource, Run, TriageState
from aifr.findings.records import ParsedFinding
from aifr.findings.severity import Severity

__all__ = [
    "FINDINGS_SCHEMA_VERSION",
    "FindingFilter",
    "FindingPage",
    "ResourceRegistry",
    "SaveCounts",
    "StoragePort",
    "TriageChange",
]

FINDINGS_SCHEMA_VERSION = 2
"""The store schema this code reads and writes (not the Finding document version)."""


@dataclass(frozen=True, slots=True)
class FindingFilter:
    """Which findings of one project to list; empty fields do not filter."""

    project_id: str
    run_id: str | None = None
    severities: tuple[Severity, ...] = ()
    scanner: str | None = None
    triage_state: TriageState | None = None
    resource_id: str | None = None


@dataclass(frozen=True, slots=True)
class FindingPage:
    """One page of findings, oldest first, and the cursor of the next page (``None`` at the end)."""

    findings: list[Finding]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class SaveCounts:
    """What saving a batch did: findings seen for the first time, and repeats of known ones."""

    new: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class TriageChange:
    """One change of a finding's triage state: who, when, from what to what and why."""

    finding_id: str
    from_state: TriageState
    to_state: TriageState
    actor: str
    at: datetime
    reason: str = ""


class StoragePort(Protocol):
    """Projects, runs and deduplicated findings of one store (the seed's StoragePort)."""

    def atomic_write(self, path: Path, chunks: Iterable[bytes]) -> int:
        """Write ``chunks`` to ``path`` so a reader sees the old file or the whole new one.

        Returns the number of bytes written. A failure (in ``chunks`` too) leaves any
        previous file untouched and no temporary file behind.
        """
        ...

    def validate_store_layout(self) -> list[str]:
        """Problems with the store's tables (missing table or column, version); empty when sound."""
        ...

    def get_schema_version(self) -> int:
        """The schema version the store holds (0 when it holds none yet)."""
        ...

    def migrate_store(self) -> int:
        """Apply the migrations an older store lacks; returns the version reached.

        Raises:
            StorageError: ``storage.schema_mismatch`` when the store is newer than this code.
        """
        ...

    def save_project(self, project: Project) -> Project:
        """Create ``project`` or return the one already stored under its id."""
        ...

    def get_project(self, project_id: str) -> Project | None:
        """The project with this id, or ``None``."""
        ...

    def list_projects(self) -> list[Project]:
        """Every project, by id."""
        ...

    def save_run(self, run: Run) -> None:
        """Store ``run`` (a later save of the same id updates ``finished_at`` and ``scanner``).

        Raises:
            FindingsError: ``findings.not_found`` when its project does not exist.
        """
        ...

    def list_runs(self, project_id: str) -> list[Run]:
        """A project's runs, oldest first."""
        ...

    def save_finding(self, finding: Finding) -> bool:
        """Store one finding; ``True`` when its fingerprint is new in the project.

        A known fingerprint updates ``last_seen``, ``last_run_id`` and ``occurrences``;
        the first report's fields and the triage state are kept.

        Raises:
            FindingsError: its run is not a run of its project.
        """
        ...

    def save_findings(self, findings: Iterable[Finding]) -> SaveCounts:
        """Store many findings in one transaction (all or none), deduplicated as one by one.

        Raises:
            FindingsError: a finding's run is not a run of its project (nothing is kept).
        """
        ...

    def save_parsed(
        self,
        records: Iterable[tuple[ParsedFinding, str | None]],
        *,
        project_id: str,
        run_id: str,
        seen_at: datetime,
    ) -> SaveCounts:
        """Store parser records, each with the id of the resource it links to, in one transaction.

        The import path: an adapter may write the record's fields without building a
        :class:`Finding` model, with the same result as ``save_findings`` of
        ``record.to_finding(...)``. ``records`` may be a stream that parses as it is
        read (the importer passes one): read it once, and let an exception it raises
        propagate (nothing of the batch is kept then).

        Raises:
            FindingsError: ``run_id`` is not a run of ``project_id`` (nothing is kept).
        """
        ...

    def get_finding(self, project_id: str, finding_id: str) -> Finding | None:
        """One finding of a project by id, or ``None``."""
        ...

    def list_findings(
        self, where: FindingFilter, *, limit: int = 100, cursor: str | None = None
    ) -> FindingPage:
        """Findings matching ``where``, oldest first, ``limit`` at a time.

        The cursor is opaque and stable: findings saved after it was issued never make a
        page repeat or skip one that existed.

        Raises:
            FindingsError: ``findings.invalid`` for a cursor this store did not issue.
        """
        ...

    def triage_finding(
        self, project_id: str, finding_id: str, state: TriageState, *, actor: str, reason: str = ""
    ) -> TriageChange:
        """Set a finding's triage state and record the change in its history.

        Raises:
            FindingsError: ``findings.not_found`` for an unknown finding.
        """
        ...

    def list_triage_history(self, project_id: str, finding_id: str) -> list[TriageChange]:
        """A finding's triage changes, oldest first."""
        ...

    def delete_project(self, project_id: str) -> bool:
        """Delete a project with its runs, resources, findings and history; ``False`` if absent."""
        ...

    def close(self) -> None:
        """Release what the store opened (connections); the store is not used afterwards."""
        ...


class ResourceRegistry(Protocol):
    """The registered targets of each project's scans (FEAT-004)."""

    def add_resource(self, resource: Resource) -> Resource:
        """Register ``resource``; the same kind and value already registered is returned instead.

        Raises:
            FindingsError: ``findings.not_found`` when its project does not exist.
        """
        ...

    def get_resource(self, project_id: str, resource_id: str) -> Resource | None:
        """One resource of a project, or ``None``."""
        ...

    def list_resources(self, project_id: str) -> Sequence[Resource]:
        """A project's resources, oldest first."""
        ...

    def remove_resource(self, project_id: str, resource_id: str) -> bool:
        """Forget a resource (findings keep their other fields); ``False`` if absent."""
        ...
