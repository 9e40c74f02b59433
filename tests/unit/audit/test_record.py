"""Records: the fast chain hash equals the canonical one, JSON round trips, timestamps."""

from __future__ import annotations

import hashlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aifr.audit import AuditEvent, AuditRecord, parse_timestamp, record_hash
from aifr.audit.record import (
    chain_hash,
    encode_event,
    event_document,
    new_record_id,
    seq_of_record_id,
    utc_timestamp,
)
from aifr.capabilities import canonical_json
from aifr.errors import ErrorCode
from audit_kit import json_values, optional_text

text = st.text(max_size=30)


@given(
    kind=text.filter(bool),
    principal=text.filter(bool),
    detail=text,
    record_id=text,
    ts=text,
    prev=text,
    seq=st.integers(min_value=1, max_value=2**62),
)
def test_spliced_hash_equals_the_hash_of_the_whole_canonical_document(
    kind: str, principal: str, detail: str, record_id: str, ts: str, prev: str, seq: int
) -> None:
    event = AuditEvent(kind=kind, principal=principal, details={"note": detail, "n": [1, None]})
    fast = chain_hash(encode_event(event), seq=seq, record_id=record_id, ts=ts, prev_hash=prev)
    document = {
        "event": event_document(event),
        "id": record_id,
        "prev_hash": prev,
        "seq": seq,
        "ts": ts,
    }
    assert fast == hashlib.sha256(canonical_json(document).encode()).hexdigest()
    record = AuditRecord(seq=seq, id=record_id, ts=ts, prev_hash=prev, hash=fast, event=event)
    assert record_hash(record) == fast


@given(
    kind=text.filter(bool),
    principal=text.filter(bool),
    fields=st.lists(optional_text, min_size=9, max_size=9),
    details=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
)
def test_the_field_by_field_encoding_is_exactly_canonical_json(
    kind: str,
    principal: str,
    fields: list[str | None],
    details: dict,  # type: ignore[type-arg]
) -> None:
    event = AuditEvent(kind, principal, *fields, details=details)
    assert encode_event(event) == canonical_json(event_document(event))


def test_a_lone_surrogate_is_refused_before_it_can_poison_a_shared_commit() -> None:
    with pytest.raises(Exception) as caught:
        encode_event(AuditEvent(kind="x", principal="p", details={"v": "\ud800"}))
    assert caught.value.code == ErrorCode.AUDIT_FAILED  # type: ignore[attr-defined]


def test_every_event_field_is_covered_by_the_hash() -> None:
    event = AuditEvent(kind="execution", principal="alice", capability_id="a.b", outcome="ok")
    base = chain_hash(encode_event(event), seq=1, record_id="au-1", ts="t", prev_hash="0")
    for name, value in [
        ("kind", "x"),
        ("principal", "eve"),
        ("capability_id", "c.d"),
        ("outcome", "execution.failed"),
        ("trace_id", "t2"),
        ("details", {"k": 1}),
    ]:
        changed = AuditEvent(
            **{**{f: getattr(event, f) for f in event.__dataclass_fields__}, name: value}
        )
        assert (
            chain_hash(encode_event(changed), seq=1, record_id="au-1", ts="t", prev_hash="0")
            != base
        )


def test_record_round_trips_through_its_flat_json_form() -> None:
    event = AuditEvent(
        kind="approval.granted", principal="bob", rule_id="r7", details={"a": [1, "x"]}
    )
    record = AuditRecord(
        seq=3, id=new_record_id(3), ts=utc_timestamp(), prev_hash="p", hash="h", event=event
    )
    flat = record.to_dict()
    assert flat["principal"] == "bob" and flat["seq"] == 3 and flat["details"] == {"a": [1, "x"]}
    assert AuditRecord.from_dict(flat) == record


def test_a_line_that_is_not_a_record_is_refused_with_an_audit_code() -> None:
    with pytest.raises(Exception) as caught:
        AuditRecord.from_dict({"seq": 1})
    assert caught.value.code == ErrorCode.AUDIT_FAILED  # type: ignore[attr-defined]


def test_details_that_are_not_json_are_refused_before_anything_is_written() -> None:
    with pytest.raises(Exception) as caught:
        encode_event(AuditEvent(kind="x", principal="p", details={"v": math.nan}))
    assert caught.value.code == ErrorCode.AUDIT_FAILED  # type: ignore[attr-defined]
    with pytest.raises(Exception) as caught:
        encode_event(AuditEvent(kind="", principal="p"))
    assert caught.value.code == ErrorCode.AUDIT_FAILED  # type: ignore[attr-defined]


def test_timestamps_are_fixed_width_utc_so_text_order_is_time_order() -> None:
    first, second = utc_timestamp(), utc_timestamp()
    assert len(first) == len("2026-01-02T03:04:05.000006Z") and first.endswith("Z")
    assert first <= second
    assert parse_timestamp("2026-01-02") == "2026-01-02T00:00:00.000000Z"
    assert parse_timestamp("2026-01-02T05:00:00+02:00") == "2026-01-02T03:00:00.000000Z"


def test_a_time_that_is_not_iso_is_refused_as_bad_input() -> None:
    with pytest.raises(Exception) as caught:
        parse_timestamp("yesterday")
    assert caught.value.code == ErrorCode.INPUT_INVALID  # type: ignore[attr-defined]
    assert "2026-11-23" in str(caught.value)  # an example of what is accepted


def test_a_record_id_carries_its_seq_and_other_text_carries_none() -> None:
    record_id = new_record_id(1234)
    assert record_id.startswith("au-1234-") and record_id != new_record_id(1234)
    assert seq_of_record_id(record_id) == 1234
    assert [seq_of_record_id(text) for text in ("au-x-1", "zz-12-ab", "", "au-")] == [None] * 4
