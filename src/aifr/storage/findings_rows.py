"""Findings, runs, projects and resources as table rows, shared by the SQLite and PostgreSQL stores.

Both stores keep the filterable and dedupe fields of a finding in columns and the whole
document as JSON text (``doc``); the columns win over the document on read, because
they are what a re-import or a triage updates. Pages are read by ``seq`` (the insertion
order), so a cursor stays valid while findings are added. Only the SQL dialect differs,
and that stays in each adapter: here the placeholder is a parameter.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from aifr.errors import ErrorCode, FindingsError, StorageError
from aifr.findings.models import Finding, Project, Resource, Run, TriageState, finding_id
from aifr.findings.ports import FINDINGS_SCHEMA_VERSION, FindingFilter, TriageChange
from aifr.findings.records import ParsedFinding

__all__ = [
    "FINDING_COLUMNS",
    "FINDING_TABLES",
    "ParsedRow",
    "decode_cursor",
    "encode_cursor",
    "filter_query",
    "finding_from_row",
    "finding_row",
    "parsed_row",
    "parsed_rows",
    "project_from_row",
    "resource_from_row",
    "run_from_row",
    "schema_problems",
    "stamp",
    "too_new",
    "too_old",
    "triage_from_row",
    "unknown_finding",
    "unknown_project",
]

FINDING_COLUMNS: Final = (
    "id, project_id, fingerprint, run_id, last_run_id, scanner, severity, rule_id, title, "
    "host, url, resource_id, triage_state, first_seen, last_seen, occurrences, doc"
)
FINDING_TABLES: Final = {
    "findings_projects": ("id", "name", "description", "created_at"),
    "findings_runs": (
        "project_id", "id", "scanner", "scanner_version", "source", "started_at", "finished_at",
    ),
    "findings": (
        "seq", *(c.strip() for c in FINDING_COLUMNS.split(",")),
    ),
    "findings_run_links": ("finding_id", "run_id"),
    "findings_triage": ("finding_id", "at", "actor", "from_state", "to_state", "reason"),
    "findings_resources": ("project_id", "id", "kind", "value", "name", "created_at"),
}  # fmt: skip
_CURSOR_PREFIX: Final = "f1:"
# Fields kept in columns: a re-import or a triage changes them, never the document.
_TRACKED: Final = (
    "run_id", "last_run_id", "first_seen", "last_seen", "occurrences", "triage_state",
    "resource_id",
)  # fmt: skip


# Kept in columns, so left out of ``doc`` (and put back from the columns on read).
_IN_COLUMNS: Final = frozenset(
    {"id", "project_id", "fingerprint", "scanner", "severity", "rule_id", "title", "host", "url"}
)
_EXCLUDED: Final = set(_TRACKED) | set(_IN_COLUMNS)


# Parser output comes from json.loads, so it holds no cycles to check for; ASCII escapes
# keep a lone surrogate (valid in JSON text) storable as UTF-8.
_encode: Final = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


# A lone surrogate escape (one half of a pair without the other) in ASCII-escaped JSON.
_LONE_SURROGATE: Final = re.compile(
    r"\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f][0-9a-f]{2})|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2}"
)


def _document(doc: dict[str, Any]) -> str:
    """``doc`` as JSON text whose strings all encode as UTF-8 (lone surrogates become U+FFFD).

    JSON text may escape half of a surrogate pair; Python reads it into a str
    that neither SQLite, PostgreSQL nor the Finding model accepts.
    """
    text = _encode(doc)
    if "\\ud" in text:
        text = _LONE_SURROGATE.sub(r"\\ufffd", text)
    return text


def _text(value: str | None) -> str | None:
    """``value`` storable as UTF-8: a lone surrogate (valid in JSON text) becomes U+FFFD."""
    if value is None or value.isascii():
        return value
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def stamp(moment: datetime) -> str:
    """A UTC timestamp of fixed width, so text order is time order in every backend."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def finding_row(finding: Finding) -> tuple[object, ...]:
    """The column values of ``finding`` in :data:`FINDING_COLUMNS` order."""
    return (
        finding.id,
        finding.project_id,
        finding.fingerprint,
        finding.run_id,
        finding.last_run_id,
        finding.scanner,
        finding.severity.value,
        _text(finding.rule_id),
        _text(finding.title),
        _text(finding.host),
        _text(finding.url),
        finding.resource_id,
        finding.triage_state.value,
        stamp(finding.first_seen),
        stamp(finding.last_seen),
        finding.occurrences,
        finding.model_dump_json(exclude=_EXCLUDED),
    )


_encode_parsed_into: Final = msgspec.json.Encoder().encode_into
_sha256: Final = hashlib.sha256
ParsedRow = Callable[[ParsedFinding, str | None], tuple[object, ...]]
"""Builds the column values of one parser record (with its resource id): see :func:`parsed_rows`."""


def parsed_row(
    parsed: ParsedFinding, resource_id: str | None, project_id: str, run_id: str, seen: str
) -> tuple[object, ...]:
    """The column values of a parser record placed in a project, without building a model.

    One row of :func:`parsed_rows`; a store saving many records builds the function once.
    """
    return parsed_rows(project_id, run_id, seen)(parsed, resource_id)


def parsed_rows(project_id: str, run_id: str, seen: str) -> ParsedRow:
    """A function giving the column values of each parser record of one import batch.

    The import hot path: the parser has checked every value, and the document holds
    what :meth:`ParsedFinding.to_finding` would, less empty values (the model's defaults;
    ``finding_from_row`` validates it on read). The returned function is for one thread
    (it encodes into a buffer of its own, reused from row to row).

    The document is the record encoded by msgspec in one call: its non-empty fields
    (``omit_defaults``) from ``scanner_generation`` on; the members before it (``line``
    and the fields kept in columns, which :class:`ParsedFinding` declares first) are cut
    off the text. The cut is exact: a ``"`` inside a JSON string is always escaped, so
    ``,"scanner_generation":`` only appears where that member starts; its ``,`` becomes
    the document's ``{`` in the buffer, so the text is decoded once, from there. msgspec
    writes integers beyond 64 bits exactly and non-ASCII characters as themselves, which
    read back the same; a non-finite float (only from a ``NaN`` or ``Infinity`` in the
    input, which is not JSON) is written as ``null``, as the JSON export of a finding
    writes it. It refuses a lone surrogate in any string of the record, so where it
    succeeds every column is valid UTF-8 as it is; where it refuses,
    :func:`_checked_row` repairs them. The id is :func:`~aifr.findings.models.finding_id`
    written out (a test holds them equal).
    """
    buffer = bytearray()

    def row(parsed: ParsedFinding, resource_id: str | None) -> tuple[object, ...]:
        try:
            _encode_parsed_into(parsed, buffer)
        except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
            return _checked_row(parsed, resource_id, project_id, run_id, seen)
        start = buffer.index(_DOCUMENT_STARTS)
        buffer[start] = 0x7B  # "{"
        fingerprint = parsed.fingerprint
        return (
            _sha256(f"{project_id}\x1f{fingerprint}".encode()).hexdigest()[:32],
            project_id,
            fingerprint,
            run_id,
            run_id,
            parsed.scanner,
            parsed.severity._value_,
            parsed.rule_id,
            parsed.title,
            parsed.host,
            parsed.url,
            resource_id,
            _OPEN,
            seen,
            seen,
            1,
            buffer[start:].decode(),
        )

    return row


_OPEN: Final = TriageState.OPEN.value


def _checked_row(
    parsed: ParsedFinding, resource_id: str | None, project_id: str, run_id: str, seen: str
) -> tuple[object, ...]:
    """:func:`parsed_row` where msgspec refused the record: lone surrogates become U+FFFD."""
    doc = msgspec.to_builtins(parsed)
    for name in _BEFORE_DOCUMENT:
        doc.pop(name, None)
    return (
        finding_id(project_id, parsed.fingerprint),
        project_id,
        parsed.fingerprint,
        run_id,
        run_id,
        parsed.scanner,
        parsed.severity.value,
        _text(parsed.rule_id),
        _text(parsed.title),
        _text(parsed.host),
        _text(parsed.url),
        resource_id,
        _OPEN,
        seen,
        seen,
        1,
        _document(doc),
    )


_DOCUMENT_STARTS: Final = b',"scanner_generation":'
_BEFORE_DOCUMENT: Final = ParsedFinding.__struct_fields__[
    : ParsedFinding.__struct_fields__.index("scanner_generation")
]


def finding_from_row(row: Any) -> Finding:
    """A finding from a row selected as :data:`FINDING_COLUMNS` (tuple or mapping by position)."""
    doc: dict[str, Any] = json.loads(row[16])
    doc.update(
        id=row[0],
        project_id=row[1],
        fingerprint=row[2],
        scanner=row[5],
        severity=row[6],
        rule_id=row[7],
        title=row[8],
        host=row[9],
        url=row[10],
        run_id=row[3],
        last_run_id=row[4],
        resource_id=row[11],
        triage_state=row[12],
        first_seen=row[13],
        last_seen=row[14],
        occurrences=row[15],
    )
    return Finding.model_validate(doc)


def project_from_row(row: Any) -> Project:
    """A project from ``id, name, description, created_at``."""
    return Project(id=row[0], name=row[1], description=row[2], created_at=row[3])


def run_from_row(row: Any) -> Run:
    """A run from ``project_id, id, scanner, scanner_version, source, started_at, finished_at``."""
    return Run(
        project_id=row[0],
        id=row[1],
        scanner=row[2],
        scanner_version=row[3],
        source=row[4],
        started_at=row[5],
        finished_at=row[6],
    )


def resource_from_row(row: Any) -> Resource:
    """A resource from ``project_id, id, kind, value, name, created_at``."""
    return Resource(
        project_id=row[0], id=row[1], kind=row[2], value=row[3], name=row[4], created_at=row[5]
    )


def triage_from_row(row: Any) -> TriageChange:
    """A triage change from ``finding_id, at, actor, from_state, to_state, reason``."""
    return TriageChange(
        finding_id=row[0],
        at=datetime.fromisoformat(row[1]),
        actor=row[2],
        from_state=TriageState(row[3]),
        to_state=TriageState(row[4]),
        reason=row[5],
    )


def schema_problems(found: dict[str, set[str]], version: int) -> list[str]:
    """What is wrong with a store whose tables have the ``found`` columns, at ``version``."""
    problems = (
        [f"schema version is {version}, this aifr needs {FINDINGS_SCHEMA_VERSION}"]
        if version != FINDINGS_SCHEMA_VERSION
        else []
    )
    for table, columns in FINDING_TABLES.items():
        present = found.get(table, set())
        if not present:
            problems.append(f"table {table} is missing")
            continue
        problems.extend(
            f"table {table} lacks column {column}" for column in columns if column not in present
        )
    return problems


def too_new(where: str, version: int) -> StorageError:
    """The refusal of a store written by a newer aifr."""
    return StorageError(
        f"{where}: the findings store is at schema version {version}, newer than this aifr "
        f"knows ({FINDINGS_SCHEMA_VERSION}); upgrade aifr (pip install -U aifr)",
        code=ErrorCode.STORAGE_SCHEMA_MISMATCH,
        component="findings",
        version=version,
        expected=FINDINGS_SCHEMA_VERSION,
    )


def too_old(where: str, version: int) -> StorageError:
    """The refusal of a store an older aifr wrote: nothing changes it until asked."""
    return StorageError(
        f"{where}: the findings store is at schema version {version}, older than this aifr "
        f"needs ({FINDINGS_SCHEMA_VERSION}); back it up, then run `aifr findings migrate`",
        code=ErrorCode.STORAGE_SCHEMA_MISMATCH,
        component="findings",
        version=version,
        expected=FINDINGS_SCHEMA_VERSION,
    )


def encode_cursor(seq: int) -> str:
    """The opaque cursor of the page after the finding stored at ``seq``."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The ``seq`` a cursor continues after (0 for the first page).

    Raises:
        FindingsError: ``findings.invalid`` for a cursor no store issued.
    """
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if text.startswith(_CURSOR_PREFIX):
            seq = int(text[len(_CURSOR_PREFIX) :])
            if seq >= 0:
                return seq
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise FindingsError(f"cursor {cursor!r} was not issued by this store", cursor=cursor)


def filter_query(
    where: FindingFilter, placeholder: str, *, after_seq: int, limit: int
) -> tuple[str, list[object]]:
    """``SELECT <columns>, seq`` for one page of ``where``, with its bound parameters."""
    clauses = ["project_id = {p}", "seq > {p}"]
    params: list[object] = [where.project_id, after_seq]
    if where.run_id is not None:
        clauses.append(
            "(run_id = {p} OR last_run_id = {p} OR id IN "
            "(SELECT finding_id FROM findings_run_links WHERE run_id = {p}))"
        )
        params.extend([where.run_id] * 3)
    if where.severities:
        marks = ", ".join("{p}" for _ in where.severities)
        clauses.append(f"severity IN ({marks})")
        params.extend(s.value for s in where.severities)
    for column, value in (
        ("scanner", where.scanner),
        ("triage_state", where.triage_state.value if where.triage_state else None),
        ("resource_id", where.resource_id),
    ):
        if value is not None:
            clauses.append(f"{column} = {{p}}")
            params.append(value)
    condition = " AND ".join(clauses).format(p=placeholder)
    sql = (
        f"SELECT {FINDING_COLUMNS}, seq FROM findings "  # noqa: S608  # constant columns, bound values
        f"WHERE {condition} ORDER BY seq LIMIT {placeholder}"
    )
    return sql, [*params, limit]


def unknown_project(project_id: str) -> FindingsError:
    """The error for a project that does not exist (create it with a first import)."""
    return FindingsError(
        f"project {project_id!r} does not exist; a first `aifr findings import --project "
        f"{project_id}` or `aifr resources add --project {project_id}` creates it",
        code=ErrorCode.FINDINGS_NOT_FOUND,
        project_id=project_id,
    )


def unknown_finding(project_id: str, finding_id: str) -> FindingsError:
    """The error for a finding id that is not in the project."""
    return FindingsError(
        f"finding {finding_id!r} is not in project {project_id!r}",
        code=ErrorCode.FINDINGS_NOT_FOUND,
        project_id=project_id,
        finding_id=finding_id,
    )
