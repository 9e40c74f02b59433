"""Chain verification names the first bad record and what happened to it."""

from __future__ import annotations

import dataclasses

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aifr.audit import (
    GENESIS_HASH,
    AuditEvent,
    AuditRecord,
    ChainHead,
    sign_checkpoint,
    verify_chain,
)
from aifr.audit.record import chain_hash, encode_event


def _append(chain: list[AuditRecord], event: AuditEvent, seq: int | None = None) -> AuditRecord:
    prev = chain[-1].hash if chain else GENESIS_HASH
    seq = seq if seq is not None else (chain[-1].seq + 1 if chain else 1)
    record_id, ts = f"au-{seq}", f"2026-01-01T00:00:{seq:02d}.000000Z"
    digest = chain_hash(encode_event(event), seq=seq, record_id=record_id, ts=ts, prev_hash=prev)
    record = AuditRecord(seq=seq, id=record_id, ts=ts, prev_hash=prev, hash=digest, event=event)
    chain.append(record)
    return record


def _chain(length: int) -> list[AuditRecord]:
    chain: list[AuditRecord] = []
    for n in range(length):
        _append(chain, AuditEvent(kind="execution", principal=f"p{n % 3}", outcome="ok"))
    return chain


def _verify(chain: list[AuditRecord], **kwargs):  # type: ignore[no-untyped-def]
    def seq_of_hash(value: str) -> int | None:
        return min((r.seq for r in chain if r.hash == value), default=None)

    return verify_chain(chain, seq_of_hash=seq_of_hash, **kwargs)


def _renumber(records: list[AuditRecord], start: int) -> list[AuditRecord]:
    return [dataclasses.replace(r, seq=start + i) for i, r in enumerate(records)]


def test_an_untouched_chain_verifies_and_reports_its_head() -> None:
    chain = _chain(10)
    report = _verify(chain)
    assert report.ok and report.checked == 10
    assert (report.head_seq, report.head_hash) == (10, chain[-1].hash)
    assert _verify([]).ok


def test_an_edited_field_is_a_hash_mismatch_at_that_record() -> None:
    chain = _chain(10)
    chain[6] = dataclasses.replace(
        chain[6], event=dataclasses.replace(chain[6].event, principal="eve")
    )
    report = _verify(chain)
    assert (report.ok, report.first_bad_seq, report.problem, report.checked) == (
        False,
        7,
        "hash_mismatch",
        6,
    )


def test_a_deleted_record_is_missing_and_a_renumbered_deletion_breaks_the_chain() -> None:
    chain = _chain(10)
    assert (
        _verify(chain[:4] + chain[5:]).first_bad_seq,
        _verify(chain[:4] + chain[5:]).problem,
    ) == (5, "missing")
    renumbered = chain[:4] + _renumber(chain[5:], 5)
    report = _verify(renumbered)
    assert (report.first_bad_seq, report.problem) == (5, "chain_break")


def test_swapped_records_are_reported_as_reordered_at_the_first_of_them() -> None:
    chain = _chain(10)
    swapped = chain[:3] + _renumber([chain[4], chain[3]], 4) + chain[5:]
    report = _verify(swapped)
    assert (report.first_bad_seq, report.problem) == (4, "reordered")
    far = chain[:2] + _renumber([chain[7]], 3) + chain[3:7] + _renumber([chain[2]], 8) + chain[8:]
    assert (_verify(far).first_bad_seq, _verify(far).problem) == (3, "reordered")


def test_a_forged_record_inserted_in_the_middle_is_named_whether_or_not_its_hash_is_valid() -> None:
    chain = _chain(10)
    forged: list[AuditRecord] = list(chain[:4])
    _append(forged, AuditEvent(kind="execution", principal="alice", outcome="ok"))
    valid_forgery = forged + _renumber(chain[4:], 6)
    assert (_verify(valid_forgery).first_bad_seq, _verify(valid_forgery).problem) == (5, "inserted")
    garbage = dataclasses.replace(forged[4], hash="f" * 64, prev_hash="e" * 64)
    crude_forgery = [*chain[:4], garbage, *_renumber(chain[4:], 6)]
    assert (_verify(crude_forgery).first_bad_seq, _verify(crude_forgery).problem) == (5, "inserted")


def test_a_forged_record_appended_with_a_bad_link_breaks_the_chain() -> None:
    chain = _chain(5)
    forged = dataclasses.replace(chain[-1], seq=6, prev_hash="a" * 64)
    report = _verify([*chain, forged])
    assert (report.first_bad_seq, report.problem) == (6, "chain_break")


def test_truncation_after_a_checkpoint_is_detected_and_before_it_is_not_needed() -> None:
    key = Ed25519PrivateKey.generate()
    chain = _chain(10)
    checkpoint = sign_checkpoint(ChainHead(10, chain[-1].hash), key)
    assert _verify(chain, checkpoints=[checkpoint]).ok
    report = _verify(chain[:7], checkpoints=[checkpoint])
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 8, "truncated")
    assert not _verify(chain[:7]).problem  # without a checkpoint a short chain looks whole


def test_a_rewritten_chain_contradicts_the_checkpoint() -> None:
    key = Ed25519PrivateKey.generate()
    chain = _chain(6)
    checkpoint = sign_checkpoint(ChainHead(6, chain[-1].hash), key)
    rewritten = chain[:3]
    for record in chain[3:]:
        _append(rewritten, dataclasses.replace(record.event, principal="someone-else"))
    report = _verify(rewritten, checkpoints=[checkpoint])
    assert (report.first_bad_seq, report.problem) == (6, "checkpoint_mismatch")


def test_checkpoints_from_other_keys_are_ignored_and_forged_signatures_are_reported() -> None:
    trusted, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    chain = _chain(4)
    from aifr.audit import public_key_hex

    foreign = sign_checkpoint(ChainHead(9, "0" * 64), other)
    assert _verify(chain, checkpoints=[foreign], trusted_key=public_key_hex(trusted)).ok
    genuine = sign_checkpoint(ChainHead(4, chain[-1].hash), trusted)
    forged = dataclasses.replace(genuine, seq=9)
    report = _verify(chain, checkpoints=[forged], trusted_key=public_key_hex(trusted))
    assert (report.ok, report.problem) == (False, "checkpoint_invalid")
