"""Audit events, chained records and the one hash that links them.

A record's ``hash`` is the SHA-256 of the canonical JSON document
``{"event": {...every event field...}, "id", "prev_hash", "seq", "ts"}``; the first
record's ``prev_hash`` is :data:`GENESIS_HASH`. Every field of a record is therefore
covered, and each record commits to everything before it: editing, removing, inserting or
moving one record breaks the chain at that record.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import JsonValue

from aifr.audit.ids import random_hex
from aifr.capabilities import canonical_json, compact_encoder
from aifr.errors import AuditError, ErrorCode
from aifr.frozen import fast_init

__all__ = [
    "EVENT_FIELDS",
    "GENESIS_HASH",
    "AuditEvent",
    "PreparedEvent",
    "AuditRecord",
    "ChainHead",
    "chain_hash",
    "encode_details",
    "encode_event",
    "encode_event_and_details",
    "event_document",
    "new_record_id",
    "parse_timestamp",
    "record_hash",
    "seq_of_record_id",
    "utc_timestamp",
]

GENESIS_HASH = "0" * 64

# The encoder behind canonical_json, built once (json.dumps builds one per call).
_CANONICAL = compact_encoder(sort_keys=True, ensure_ascii=False, allow_nan=False)
_string_literal: Callable[[str], str] = (
    json.encoder.encode_basestring
)  # the C accelerator when present
_PLAIN = re.compile(r"[0-9A-Za-z:.\-]+")

EVENT_FIELDS = (
    "kind",
    "principal",
    "capability_id",
    "capability_fingerprint",
    "decision",
    "rule_id",
    "inputs_digest",
    "outcome",
    "trace_id",
    "request_id",
    "run_id",
)


@fast_init
@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One thing that happened: a decision, an execution, an approval, a compensation...

    ``kind`` is a dotted name (``decision``, ``execution``, ``approval.granted``,
    ``compensation``, ``config.changed``, ``workflow.step``); ``outcome`` is ``ok`` or an
    error code. ``details`` must already be redacted by the caller; the ledger runs one
    more redaction pass over secret-looking keys and values before hashing.
    """

    kind: str
    principal: str
    capability_id: str | None = None
    capability_fingerprint: str | None = None
    decision: str | None = None
    rule_id: str | None = None
    inputs_digest: str | None = None
    outcome: str | None = None
    trace_id: str | None = None
    request_id: str | None = None
    run_id: str | None = None
    details: Mapping[str, JsonValue] = field(default_factory=dict)


@fast_init
@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last record of a chain: its sequence number and hash (``0``/genesis when empty)."""

    seq: int
    hash: str


@fast_init
@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An event as stored: its place in the chain (``seq``), id, UTC time and hashes."""

    seq: int
    id: str
    ts: str
    prev_hash: str
    hash: str
    event: AuditEvent
    details_json: str | None = field(default=None, repr=False, compare=False)
    """The details column's text: as the ledger encoded it on append (stores write it
    instead of encoding the same dict again), or as a store read it back, which
    ``verify`` holds to the canonical encoding of ``event.details``."""

    def to_dict(self) -> dict[str, JsonValue]:
        """The flat JSON form used by export, tail and sinks (event fields at top level)."""
        body: dict[str, JsonValue] = {
            "seq": self.seq,
            "id": self.id,
            "ts": self.ts,
        }
        event = self.event
        for name in EVENT_FIELDS:
            body[name] = getattr(event, name)
        body["details"] = dict(event.details)
        body["prev_hash"] = self.prev_hash
        body["hash"] = self.hash
        return body

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRecord:
        """Rebuild a record from :meth:`to_dict` output (an exported line).

        Raises:
            AuditError: a required field is missing or has the wrong type.
        """
        try:
            optional = {name: data.get(name) for name in EVENT_FIELDS[2:]}
            event = AuditEvent(
                str(data["kind"]),
                str(data["principal"]),
                **optional,
                details=dict(data.get("details") or {}),
            )
            return cls(
                seq=int(data["seq"]),
                id=str(data["id"]),
                ts=str(data["ts"]),
                prev_hash=str(data["prev_hash"]),
                hash=str(data["hash"]),
                event=event,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AuditError(f"not an audit record: {exc!r}") from exc


def event_document(event: AuditEvent) -> dict[str, JsonValue]:
    """Every field of ``event`` as a JSON object (``None`` fields included, so keys are stable)."""
    document: dict[str, JsonValue] = {name: getattr(event, name) for name in EVENT_FIELDS}
    document["details"] = dict(event.details)
    return document


def _text(value: object) -> str:
    """One event field as JSON: a string literal (non-ASCII kept), ``null``, or any value."""
    if value is None:
        return "null"
    if type(value) is str:
        return _string_literal(value)
    return _CANONICAL(value)


def encode_details(details: Mapping[str, JsonValue]) -> str:
    """Canonical JSON of an event's details, as stores keep them in a column."""
    return _CANONICAL(details if isinstance(details, dict) else dict(details))


def encode_event(event: AuditEvent) -> str:
    """The canonical JSON of ``event``, the part of a record's hash input the caller owns.

    Raises:
        AuditError: see :func:`encode_event_and_details`.
    """
    return encode_event_and_details(event)[0]


PreparedEvent = tuple[AuditEvent, str, str]
"""An event as appended: redacted, with its canonical JSON and its details' JSON."""


def encode_event_and_details(event: AuditEvent) -> tuple[str, str]:
    """The canonical JSON of ``event`` and, within it, of its details (one encoding).

    Written field by field in sorted key order, which is exactly what
    ``canonical_json(event_document(event))`` produces (a property test pins it) at half
    the cost: this runs once per append.

    Raises:
        AuditError: ``details`` holds a value JSON cannot encode (NaN, bytes, objects),
            a text is not valid Unicode (a lone surrogate), or ``kind``/``principal`` is
            empty.
    """
    if not event.kind or not event.principal:
        raise AuditError(
            "an audit event needs a kind and a principal",
            kind=event.kind,
            principal=event.principal,
        )
    details = event.details if isinstance(event.details, dict) else dict(event.details)
    try:
        details_json = _CANONICAL(details)
        encoded = (
            f'{{"capability_fingerprint":{_text(event.capability_fingerprint)}'
            f',"capability_id":{_text(event.capability_id)}'
            f',"decision":{_text(event.decision)}'
            f',"details":{details_json}'
            f',"inputs_digest":{_text(event.inputs_digest)}'
            f',"kind":{_text(event.kind)}'
            f',"outcome":{_text(event.outcome)}'
            f',"principal":{_text(event.principal)}'
            f',"request_id":{_text(event.request_id)}'
            f',"rule_id":{_text(event.rule_id)}'
            f',"run_id":{_text(event.run_id)}'
            f',"trace_id":{_text(event.trace_id)}}}'
        )
        encoded.encode("utf-8")  # a lone surrogate would fail later, inside a shared commit
    except (TypeError, ValueError) as exc:
        raise AuditError(
            f"audit event {event.kind!r} has a field that is not JSON-safe text: {exc}",
            kind=event.kind,
        ) from exc
    return encoded, details_json


def chain_hash(event_json: str, *, seq: int, record_id: str, ts: str, prev_hash: str) -> str:
    """SHA-256 of the record document, built around the already-encoded event.

    ``"event"`` sorts before ``"id"``, so splicing the encoded event in front of the
    other four keys yields exactly the canonical JSON of the whole document
    (a test pins this against hashing the whole document at once).
    Ids, times and hashes made by the ledger need no JSON escaping; anything else goes
    through the encoder.
    """
    if _PLAIN.fullmatch(record_id + ts + prev_hash):
        rest = f'"id":"{record_id}","prev_hash":"{prev_hash}","seq":{seq},"ts":"{ts}"}}'
    else:
        rest = canonical_json({"id": record_id, "prev_hash": prev_hash, "seq": seq, "ts": ts})[1:]
    document = '{"event":' + event_json + "," + rest
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def record_hash(record: AuditRecord) -> str:
    """Recompute a stored record's hash from its fields (what ``verify`` compares).

    Returns ``""`` when a field can no longer be encoded (a corrupted row), which never
    equals a stored hash.
    """
    try:
        event_json = encode_event(record.event)
    except AuditError:
        return ""
    return chain_hash(
        event_json, seq=record.seq, record_id=record.id, ts=record.ts, prev_hash=record.prev_hash
    )


def new_record_id(seq: int) -> str:
    """A record id: ``au-<seq>-<16 random hex digits>``.

    The seq inside lets a store find a record by id through its primary key (no second
    index on the hot insert path); the random part keeps ids unique across ledgers and
    across a seq reused after a rolled-back ``append_in``.
    """
    return f"au-{seq}-{random_hex(8)}"


def seq_of_record_id(record_id: str) -> int | None:
    """The seq an id made by :func:`new_record_id` carries (``None`` for any other text)."""
    _, _, rest = record_id.partition("au-")
    number, _, _ = rest.partition("-")
    return int(number) if number.isdigit() and record_id.startswith("au-") else None


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC with microseconds and ``Z``: fixed width, so text order is time order."""
    if moment is not None:
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    now = time.time()
    second = int(now)
    return f"{_second_text(second)}.{int((now - second) * 1_000_000):06d}Z"


@functools.lru_cache(maxsize=4)
def _second_text(second: int) -> str:
    """The formatted second, computed once per second rather than once per record."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def parse_timestamp(text: str) -> str:
    """Normalize a user-given ISO date or date-time (naive means UTC) to the stored form.

    Raises:
        AuditError: ``text`` is not an ISO 8601 date or date-time (code
            ``input.invalid``: the caller's input is wrong, not the ledger).
    """
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise AuditError(
            f"not an ISO 8601 time: {text!r} (write e.g. 2026-11-23 or 2026-11-23T08:00:00Z)",
            code=ErrorCode.INPUT_INVALID,
            value=text,
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return utc_timestamp(moment)
