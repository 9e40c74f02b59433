"""What a parser yields: parsed findings, skipped records and parse problems.

Parsers run on files of millions of lines, so a finding is a :class:`msgspec.Struct`, not
a validated pydantic model: the parser has already checked every value it sets (types,
ranges, the severity enum), and :meth:`ParsedFinding.to_finding` builds the validated
:class:`~aifr.findings.models.Finding` only where one is needed (a store that keeps
models, a test, an export). A store can also write the fields straight from the record:
the SQL stores encode its document in one C call (``omit_defaults`` leaves out the empty
fields, as the model's defaults put them back).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import msgspec
from pydantic import JsonValue

from aifr.findings.models import Finding, TriageState, finding_id
from aifr.findings.severity import Severity

__all__ = ["ParseEvent", "ParseProblem", "ParsedFinding", "SkippedRecord"]


@dataclass(frozen=True, slots=True)
class ParseProblem:
    """A line or record that could not be read (malformed, truncated, not an object...).

    ``line`` is the 1-based line where the record starts; the parser goes on after it.
    """

    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class SkippedRecord:
    """A well-formed record that is not a finding (statistics, configuration, wildcard...)."""

    line: int
    scanner: str
    kind: str
    reason: str


class ParsedFinding(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One finding as read from scanner output, before it is placed in a project and run.

    A :class:`msgspec.Struct` (built in C, a fifth cheaper than a slotted dataclass, and
    encoded to JSON in one call without its empty fields). Not frozen on purpose: a
    frozen dataclass set each of its 35 fields through ``object.__setattr__``, which
    made building one cost 7 times more on the import hot path. Treat it as read-only;
    the model it becomes (:meth:`to_finding`) is frozen.

    Built by keyword only. The fields the stores keep in columns come first, up to
    ``scanner_generation``, so the stored document can leave them out by cutting the
    encoded text there (:func:`aifr.storage.findings_rows.parsed_row`).
    """

    line: int
    fingerprint: str
    scanner: str
    rule_id: str
    title: str
    severity: Severity
    url: str | None = None
    host: str | None = None
    scanner_generation: str
    scanner_version: str | None = None
    description: str | None = None
    scanner_severity: str | None = None
    cvss_score: float | None = None
    cvss_vector: str | None = None
    port: int | None = None
    scheme: str | None = None
    path: str | None = None
    method: str | None = None
    matched_at: str | None = None
    ip: str | None = None
    matcher_name: str | None = None
    extractor_name: str | None = None
    extracted_results: tuple[str, ...] = ()
    status_code: int | None = None
    evidence: dict[str, JsonValue] = msgspec.field(default_factory=dict)
    references: tuple[str, ...] = ()
    cwe: tuple[str, ...] = ()
    cve: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    remediation: str | None = None
    rule_url: str | None = None
    rule_metadata: dict[str, JsonValue] = msgspec.field(default_factory=dict)
    observed_at: datetime | None = None
    raw: dict[str, JsonValue] = msgspec.field(default_factory=dict)

    def to_finding(
        self,
        *,
        project_id: str,
        run_id: str,
        seen_at: datetime,
        resource_id: str | None = None,
        triage_state: TriageState = TriageState.OPEN,
    ) -> Finding:
        """The validated finding this record becomes in a project, first seen in ``run_id``.

        Raises:
            pydantic.ValidationError: a value the model refuses (an id with a space...).
        """
        values = {name: getattr(self, name) for name in _FINDING_FIELDS}
        return Finding.model_validate(
            {
                **values,
                "id": finding_id(project_id, self.fingerprint),
                "project_id": project_id,
                "run_id": run_id,
                "last_run_id": run_id,
                "resource_id": resource_id,
                "first_seen": seen_at,
                "last_seen": seen_at,
                "occurrences": 1,
                "triage_state": triage_state,
            }
        )

    def to_json(self) -> dict[str, JsonValue]:
        """A JSON-ready dict of every field (datetimes as ISO 8601), for goldens and logs."""
        out: dict[str, JsonValue] = {}
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, datetime):
                out[name] = value.isoformat()
            elif isinstance(value, tuple):
                out[name] = list(value)
            else:
                out[name] = value
        return out


_FINDING_FIELDS = tuple(name for name in ParsedFinding.__struct_fields__ if name != "line")

ParseEvent = ParsedFinding | SkippedRecord | ParseProblem
