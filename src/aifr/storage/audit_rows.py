"""Audit records as table rows, shared by the SQLite and PostgreSQL audit stores.

Both stores keep one column per record field in the same order (:data:`AUDIT_COLUMNS`),
``details`` as canonical JSON text, and read pages by seq. Only the SQL dialect differs,
and that stays in each adapter.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from pydantic import JsonValue

from aifr.audit import AuditEvent, AuditRecord
from aifr.audit.record import EVENT_FIELDS, encode_details

__all__ = [
    "AUDIT_COLUMNS",
    "PAGE_SIZE",
    "audit_row",
    "event_columns",
    "page_records",
    "record_from_row",
    "scan_query",
]

AUDIT_COLUMNS: Final = (
    "seq, id, ts, kind, principal, capability_id, capability_fingerprint, decision, rule_id, "
    "inputs_digest, outcome, trace_id, request_id, run_id, details, prev_hash, hash"
)
PAGE_SIZE: Final = 1000

_OPTIONAL = EVENT_FIELDS[2:]


def event_columns(event: AuditEvent) -> tuple[str | None, ...]:
    """The event's 11 columns, in :data:`AUDIT_COLUMNS` order (from ``kind`` to ``run_id``).

    One list for every writer: a row here, the server-side append's text array there.
    """
    return (
        event.kind,
        event.principal,
        event.capability_id,
        event.capability_fingerprint,
        event.decision,
        event.rule_id,
        event.inputs_digest,
        event.outcome,
        event.trace_id,
        event.request_id,
        event.run_id,
    )


def audit_row(record: AuditRecord) -> tuple[object, ...]:
    """The column values of ``record``, in :data:`AUDIT_COLUMNS` order."""
    event = record.event
    return (
        record.seq,
        record.id,
        record.ts,
        *event_columns(event),
        record.details_json or encode_details(event.details),
        record.prev_hash,
        record.hash,
    )


def _details(text: object) -> dict[str, JsonValue]:
    """Parse the details column; a corrupted value is kept visibly (its hash won't match)."""
    try:
        value = json.loads(str(text))
    except ValueError:
        return {"$corrupt": str(text)}
    return value if isinstance(value, dict) else {"$corrupt": str(text)}


def record_from_row(row: Sequence[Any]) -> AuditRecord:
    """The record a row read in :data:`AUDIT_COLUMNS` order holds."""
    optional = dict(zip(_OPTIONAL, row[5:14], strict=True))
    event = AuditEvent(row[3], row[4], **optional, details=_details(row[14]))
    return AuditRecord(
        seq=row[0],
        id=row[1],
        ts=row[2],
        prev_hash=row[15],
        hash=row[16],
        event=event,
        details_json=str(row[14]),  # as stored, so verify sees a respelled column
    )


def scan_query(
    table: str,
    mark: str,
    *,
    after_seq: int,
    since: str | None,
    until: str | None,
    principal: str | None,
    newest_first: bool,
) -> tuple[str, list[object]]:
    """The SELECT for one page of a filtered scan and its leading parameters.

    ``mark`` is the dialect's placeholder (``?`` or ``%s``). The statement ends with two
    more placeholders, the page position and size, which :func:`page_records` supplies.
    Only constant fragments are joined; every value is bound.
    """
    clauses = [f"seq > {mark}"]
    params: list[object] = [after_seq]
    for clause, value in (("ts >=", since), ("ts <", until), ("principal =", principal)):
        if value is not None:
            clauses.append(f"{clause} {mark}")
            params.append(value)
    clauses.append(f"seq {'<' if newest_first else '>'} {mark}")
    sql = (
        f"SELECT {AUDIT_COLUMNS} FROM {table} WHERE {' AND '.join(clauses)} "  # noqa: S608  # constant fragments, bound values
        f"ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT {mark}"
    )
    return sql, params


def page_records(
    fetch: Callable[[int, int], Sequence[Sequence[Any]]],
    *,
    limit: int | None,
    newest_first: bool,
) -> Iterator[AuditRecord]:
    """Yield records page by page; ``fetch(position, page_size)`` reads the next page.

    ``position`` is the last seq already yielded (the query continues below it when
    ``newest_first``, above it otherwise), so no read transaction stays open between
    pages and a reader never blocks the writers.
    """
    position = 2**63 - 1 if newest_first else 0
    remaining = limit if limit is not None else -1
    while remaining != 0:
        size = PAGE_SIZE if remaining < 0 else min(PAGE_SIZE, remaining)
        rows = fetch(position, size)
        for row in rows:
            yield record_from_row(row)
        if len(rows) < size:
            return
        position = rows[-1][0]
        remaining = remaining - len(rows) if remaining > 0 else remaining
