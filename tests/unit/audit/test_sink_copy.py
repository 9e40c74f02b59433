"""Holding a ledger's records to a sink's copy: removed, replaced, and the copy's lines."""

from __future__ import annotations

import json

import pytest

from aifr.audit import AuditEvent, AuditRecord, compare_with_copy, read_copy_lines, record_line
from aifr.audit.checkpoint import CHECKPOINT_FORMAT
from aifr.audit.sink_copy import SinkCopy
from aifr.errors import AifrError


def _record(seq: int, principal: str = "alice") -> AuditRecord:
    return AuditRecord(
        seq=seq,
        id=f"id-{principal}-{seq}",
        ts=f"2026-11-25T10:00:{seq:02d}Z",
        prev_hash=f"{seq - 1:064x}",
        hash=f"{seq:032x}{hash(principal) & 0xFFFF:032x}",
        event=AuditEvent(kind="execution", principal=principal, capability_id="demo.echo"),
    )


def test_an_intact_ledger_with_records_not_shipped_yet_holds() -> None:
    shipped = [_record(n) for n in range(1, 4)]
    report = compare_with_copy([*shipped, _record(4)], SinkCopy.of("s", shipped, []))
    assert report.ok and report.shipped == 3
    assert "all 3 records s holds are in the ledger unchanged" in report.message


def test_replaced_and_removed_records_are_named_with_the_shipped_originals() -> None:
    shipped = [_record(n) for n in range(1, 8)]
    local = [*shipped[:4], _record(5, "mallory"), _record(6, "mallory")]
    report = compare_with_copy(local, SinkCopy.of("nats:x", reversed(shipped), []))
    assert not report.ok
    assert [r.seq for r, _ in report.replaced] == [5, 6]
    assert [r.id for r in report.removed] == ["id-alice-7"]
    assert report.message.startswith("nats:x: records 5..6 were replaced after shipping")
    assert "record 7 was removed after shipping (7 id-alice-7 execution demo.echo" in (
        report.message
    )
    shown = report.to_dict()
    assert shown["replaced"][0]["ledger_kind"] == "execution"  # type: ignore[index]
    assert [r["seq"] for r in shown["removed"]] == [7]  # type: ignore[union-attr,index]


def test_a_record_shipped_twice_counts_once_and_gaps_are_named_as_ranges() -> None:
    shipped = [_record(n) for n in (1, 2, 2, 3, 4, 6)]
    report = compare_with_copy([_record(1)], SinkCopy.of("s", shipped, []))
    assert report.shipped == 5
    assert "records 2..4, 6 were removed" in report.message


def test_an_http_receivers_lines_hold_records_and_checkpoints() -> None:
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "seq": 2,
        "hash": "ab" * 32,
        "ts": "2026-11-25T10:00:00Z",
        "public_key": "00" * 32,
        "signature": "00" * 64,
    }
    lines = [
        record_line(_record(1)),
        "",
        record_line(_record(2)),
        json.dumps({"checkpoint": checkpoint}),
    ]
    copy = read_copy_lines("kept.jsonl", lines)
    assert sorted(copy.records) == [1, 2] and [c.seq for c in copy.checkpoints] == [2]


@pytest.mark.parametrize("line", ["not json", "[1, 2]", '{"seq": 1}'])
def test_a_line_that_is_no_record_or_checkpoint_is_refused_with_its_number(line: str) -> None:
    with pytest.raises(AifrError, match=r"kept\.jsonl: line 2"):
        read_copy_lines("kept.jsonl", [record_line(_record(1)), line])
