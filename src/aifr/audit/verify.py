"""Walk a chain and name the first record that was edited, removed, inserted or moved.

Each record is checked for three things, in seq order: its seq follows the previous one
(else records are ``missing``), its ``prev_hash`` is the previous record's hash (the
link), and its own hash recomputes from its fields (the content). When a check fails the
walk explains it with what else the ledger holds:

- the record links to a hash stored *later* in the ledger: records were ``reordered``;
- the record links to an earlier record than its predecessor, or skipping it heals the
  chain: the records in between were ``inserted``;
- the link holds but the content does not: the record was edited (``hash_mismatch``);
- the link points nowhere: ``chain_break`` (a record before it was removed and the rest
  renumbered, or the record was forged).

Signed checkpoints then catch what a chain alone cannot: a ledger that ends before a
checkpoint's seq was ``truncated``; a record whose hash differs from a checkpoint's was
rewritten together with everything after it (``checkpoint_mismatch``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import JsonValue

from aifr.audit.checkpoint import Checkpoint
from aifr.audit.record import GENESIS_HASH, AuditRecord, encode_details, record_hash

__all__ = ["Problem", "VerifyReport", "verify_chain"]

Problem = Literal[
    "hash_mismatch",
    "chain_break",
    "missing",
    "reordered",
    "inserted",
    "truncated",
    "checkpoint_mismatch",
    "checkpoint_invalid",
]


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The result of a verification: ``ok``, or the first bad seq with what went wrong."""

    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: Problem | None = None
    message: str = "chain intact"
    checkpoint_seq: int | None = None

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON form (``aifr audit verify --json``)."""
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
            "message": self.message,
            "checkpoint_seq": self.checkpoint_seq,
        }


@dataclass(frozen=True, slots=True)
class _Finding:
    seq: int
    problem: Problem
    message: str


def _is_stored_as_hashed(record: AuditRecord) -> bool:
    """Whether the record's stored details text is the canonical JSON its hash covers.

    The hash covers the details' canonical encoding, which is also what stores write; a
    column rewritten to an equal value in another spelling (whitespace, key order,
    escapes) still parses to the same details and so would pass the hash. Any change to
    a stored row is tampering, so the text itself must be the one that was hashed.
    Records not read from a store carry no stored text and pass.
    """
    stored = record.details_json
    if stored is None:
        return True
    try:
        return stored == encode_details(record.event.details)
    except (TypeError, ValueError):  # NaN or another value canonical JSON refuses
        return False


def _link_problem(
    previous: AuditRecord | None,
    current: AuditRecord,
    following: AuditRecord | None,
    seq_of_hash: Callable[[str], int | None],
) -> _Finding | None:
    """Explain a record whose link or content is wrong (``None`` when both hold)."""
    expected_prev = previous.hash if previous is not None else GENESIS_HASH
    is_linked = current.prev_hash == expected_prev
    is_intact = record_hash(current) == current.hash and _is_stored_as_hashed(current)
    if is_linked and is_intact:
        return None
    seq = current.seq
    target = None if is_linked else seq_of_hash(current.prev_hash)
    if target is not None and target >= seq:
        return _Finding(
            seq, "reordered", f"record {seq} belongs after record {target}: records were reordered"
        )
    if target is not None and target < seq - 1:
        return _Finding(
            target + 1,
            "inserted",
            f"records {target + 1}..{seq - 1} were inserted: record {seq} follows record {target}",
        )
    if following is not None and following.prev_hash == expected_prev:
        return _Finding(
            seq, "inserted", f"record {seq} was inserted: record {following.seq} skips it"
        )
    if is_linked:
        return _Finding(
            seq, "hash_mismatch", f"record {seq} was modified: its hash does not match its fields"
        )
    return _Finding(
        seq,
        "chain_break",
        f"record {seq} does not follow record {seq - 1}: its prev_hash matches no record "
        "(a record before it was removed, or it was forged)",
    )


def _walk(
    records: Iterable[AuditRecord],
    seq_of_hash: Callable[[str], int | None],
    pinned: dict[int, Checkpoint],
) -> tuple[int, AuditRecord | None, _Finding | None]:
    """Check records in order; returns (checked, last good record, first finding)."""
    checked = 0
    previous: AuditRecord | None = None
    iterator = iter(records)
    current = next(iterator, None)
    while current is not None:
        following = next(iterator, None)
        expected_seq = previous.seq + 1 if previous is not None else 1
        if current.seq != expected_seq:
            last = current.seq - 1
            span = (
                f"record {expected_seq} is"
                if last == expected_seq
                else (f"records {expected_seq}..{last} are")
            )
            return checked, previous, _Finding(expected_seq, "missing", f"{span} missing")
        finding = _link_problem(previous, current, following, seq_of_hash)
        if finding is not None:
            return checked, previous, finding
        checkpoint = pinned.get(current.seq)
        if checkpoint is not None and checkpoint.hash != current.hash:
            return (
                checked,
                previous,
                _Finding(
                    current.seq,
                    "checkpoint_mismatch",
                    f"record {current.seq} differs from the signed checkpoint of {checkpoint.ts}: "
                    "the ledger was rewritten from here on",
                ),
            )
        checked += 1
        previous = current
        current = following
    return checked, previous, None


def verify_chain(
    records: Iterable[AuditRecord],
    *,
    seq_of_hash: Callable[[str], int | None],
    checkpoints: Sequence[Checkpoint] = (),
    trusted_key: str | None = None,
) -> VerifyReport:
    """Verify ``records`` (all of a ledger, in seq order) and ``checkpoints``.

    With ``trusted_key`` (hex ed25519 public key) only checkpoints signed by that key
    count, and one that claims that key with a bad signature is a problem; without it,
    each checkpoint is checked against the key it names.
    """
    pinned: dict[int, Checkpoint] = {}
    for checkpoint in checkpoints:
        if trusted_key is not None and checkpoint.public_key != trusted_key:
            continue
        if not checkpoint.is_valid():
            return VerifyReport(
                ok=False,
                checked=0,
                head_seq=0,
                head_hash=GENESIS_HASH,
                first_bad_seq=checkpoint.seq,
                problem="checkpoint_invalid",
                message=f"the checkpoint of record {checkpoint.seq} has a bad signature",
            )
        pinned[checkpoint.seq] = checkpoint
    checked, last, finding = _walk(records, seq_of_hash, pinned)
    head_seq = last.seq if last is not None else 0
    head_hash = last.hash if last is not None else GENESIS_HASH
    newest = max(pinned, default=None)
    if finding is None and newest is not None and newest > head_seq:
        finding = _Finding(
            head_seq + 1,
            "truncated",
            f"the ledger ends at record {head_seq} but a signed checkpoint covers records up "
            f"to {newest}: records {head_seq + 1}..{newest} were removed",
        )
    if finding is not None:
        return VerifyReport(
            ok=False,
            checked=checked,
            head_seq=head_seq,
            head_hash=head_hash,
            first_bad_seq=finding.seq,
            problem=finding.problem,
            message=finding.message,
            checkpoint_seq=newest,
        )
    return VerifyReport(
        ok=True,
        checked=checked,
        head_seq=head_seq,
        head_hash=head_hash,
        message=f"{checked} records, chain intact"
        + (f", signed checkpoint at record {newest} holds" if newest is not None else ""),
        checkpoint_seq=newest,
    )
