"""The sink's copy of the ledger, and what the local ledger lost or changed since shipping.

A sink holds every record the outbox shipped and the witness's signed checkpoints.
Whoever controls the ledger's database can cut its tail and append records of their
own so that the chain verifies again; the copy they cannot reach still holds the
originals. :func:`compare_with_copy` names each shipped record that is no longer in
the ledger (removed) or whose place now holds another record (replaced), with the
shipped record's id and kind, so an operator knows exactly what to restore.

The copy is read from NATS JetStream (:meth:`aifr.audit.sinks.NatsSink.fetch_copy`)
or from the JSON lines an HTTP receiver kept (:func:`read_copy_lines`: each POSTed
body appended as is: record lines and ``{"checkpoint": {...}}`` objects).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from pydantic import JsonValue

from aifr.audit.checkpoint import Checkpoint
from aifr.audit.record import AuditRecord
from aifr.errors import AuditError

__all__ = ["CopyReport", "SinkCopy", "compare_with_copy", "read_copy_lines"]

_NAMED = 20
"""At most this many records are named one by one in the message (all are in the JSON)."""


@dataclass(frozen=True, slots=True)
class SinkCopy:
    """What a sink holds: the shipped records (by seq) and the signed checkpoints."""

    source: str
    records: Mapping[int, AuditRecord] = field(default_factory=dict)
    checkpoints: tuple[Checkpoint, ...] = ()

    @classmethod
    def of(
        cls, source: str, records: Iterable[AuditRecord], checkpoints: Iterable[Checkpoint]
    ) -> SinkCopy:
        """A copy from what was read; a record shipped twice counts once (its first copy)."""
        by_seq: dict[int, AuditRecord] = {}
        for record in records:
            by_seq.setdefault(record.seq, record)
        return cls(source, dict(sorted(by_seq.items())), tuple(checkpoints))


@dataclass(frozen=True, slots=True)
class CopyReport:
    """The local ledger held to a sink's copy: what is gone and what was replaced."""

    source: str
    shipped: int
    checkpoints: int
    removed: tuple[AuditRecord, ...] = ()
    replaced: tuple[tuple[AuditRecord, AuditRecord], ...] = ()

    @property
    def ok(self) -> bool:
        """Whether every shipped record is still in the ledger, unchanged."""
        return not self.removed and not self.replaced

    @property
    def message(self) -> str:
        """One paragraph naming what the ledger lost, or that it holds the copy."""
        if self.ok:
            return (
                f"all {self.shipped} records {self.source} holds are in the ledger unchanged"
                f" ({self.checkpoints} signed checkpoints)"
            )
        parts = []
        if self.replaced:
            seqs = _ranges(r.seq for r, _ in self.replaced)
            named = "; ".join(_name(shipped) for shipped, _ in self.replaced[:_NAMED])
            parts.append(
                f"{_records(self.replaced, seqs)} replaced after shipping: the ledger holds "
                f"other records in their place (shipped: {named})"
            )
        if self.removed:
            seqs = _ranges(r.seq for r in self.removed)
            named = "; ".join(_name(r) for r in self.removed[:_NAMED])
            parts.append(f"{_records(self.removed, seqs)} removed after shipping ({named})")
        more = len(self.replaced) + len(self.removed) - 2 * _NAMED
        tail = f"; {more} more in --json" if more > 0 else ""
        return f"{self.source}: " + "; ".join(parts) + tail

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON form (an entry of ``sinks`` in ``aifr audit verify --json``)."""
        return {
            "ok": self.ok,
            "source": self.source,
            "shipped": self.shipped,
            "checkpoints": self.checkpoints,
            "removed": [_entry(r) for r in self.removed],
            "replaced": [
                {**_entry(shipped), "ledger_hash": local.hash, "ledger_kind": local.event.kind}
                for shipped, local in self.replaced
            ],
            "message": self.message,
        }


def compare_with_copy(local: Iterable[AuditRecord], copy: SinkCopy) -> CopyReport:
    """Hold the ledger's records (in seq order) to ``copy``: every shipped one must be there.

    Records the ledger holds beyond the copy are not a problem (not shipped yet).
    """
    shipped = copy.records
    replaced: list[tuple[AuditRecord, AuditRecord]] = []
    present: set[int] = set()
    for record in local:
        original = shipped.get(record.seq)
        if original is None:
            continue
        present.add(record.seq)
        if original.hash != record.hash or original.id != record.id:
            replaced.append((original, record))
    removed = tuple(r for seq, r in shipped.items() if seq not in present)
    return CopyReport(
        copy.source, len(shipped), len(copy.checkpoints), removed=removed, replaced=tuple(replaced)
    )


def read_copy_lines(source: str, lines: Iterable[str]) -> SinkCopy:
    """A copy from the JSON lines an HTTP receiver kept (blank lines are skipped).

    Raises:
        AuditError: a line is neither an audit record nor a ``{"checkpoint": ...}``.
    """
    records: list[AuditRecord] = []
    checkpoints: list[Checkpoint] = []
    for number, line in _numbered(lines):
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise AuditError(f"{source}: line {number} is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise AuditError(f"{source}: line {number} is not a JSON object")
        if isinstance(data.get("checkpoint"), dict):
            checkpoints.append(Checkpoint.from_dict(data["checkpoint"]))
        else:
            try:
                records.append(AuditRecord.from_dict(data))
            except AuditError as exc:
                raise AuditError(f"{source}: line {number}: {exc.message}") from exc
    return SinkCopy.of(source, records, checkpoints)


def _numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(lines, 1):
        if line.strip():
            yield number, line


def _entry(record: AuditRecord) -> dict[str, JsonValue]:
    return {
        "seq": record.seq,
        "id": record.id,
        "kind": record.event.kind,
        "principal": record.event.principal,
        "capability_id": record.event.capability_id,
        "ts": record.ts,
        "hash": record.hash,
    }


def _name(record: AuditRecord) -> str:
    event = record.event
    what = f"{event.kind} {event.capability_id}" if event.capability_id else event.kind
    return f"{record.seq} {record.id} {what} by {event.principal} at {record.ts}"


def _records(items: tuple[object, ...], seqs: str) -> str:
    return f"record {seqs} was" if len(items) == 1 else f"records {seqs} were"


def _ranges(seqs: Iterable[int]) -> str:
    """``5..7, 9`` for 5, 6, 7, 9."""
    spans: list[list[int]] = []
    for seq in seqs:
        if spans and seq == spans[-1][1] + 1:
            spans[-1][1] = seq
        else:
            spans.append([seq, seq])
    return ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in spans)
