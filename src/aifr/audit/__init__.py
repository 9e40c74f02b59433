"""The tamper-evident audit ledger (DESIGN.md part D): chain, verify, export, ship.

The sinks (``HttpSink``, ``NatsSink``, ``sink_from_url``) are loaded on first access:
they bring httpx, which a process that never ships audit records does not need.
"""

from typing import TYPE_CHECKING

from aifr.audit.checkpoint import (
    Checkpoint,
    load_or_create_signing_key,
    public_key_hex,
    sign_checkpoint,
)
from aifr.audit.export import EXPORT_FORMATS, record_line, write_jsonl
from aifr.audit.ids import random_hex
from aifr.audit.ledger import MAX_BATCH, AuditLedger, LedgerStats
from aifr.audit.outbox import Outbox
from aifr.audit.ports import AuditStore, ChainBuilder, Sink
from aifr.audit.prefigure import EventTemplate
from aifr.audit.record import (
    GENESIS_HASH,
    AuditEvent,
    AuditRecord,
    ChainHead,
    parse_timestamp,
    record_hash,
)
from aifr.audit.redact import REDACTED, redact_details, redact_text
from aifr.audit.sink_copy import CopyReport, SinkCopy, compare_with_copy, read_copy_lines
from aifr.audit.verify import Problem, VerifyReport, verify_chain
from aifr.audit.witness import Witness

if TYPE_CHECKING:
    from aifr.audit.sinks import HttpSink, NatsSink, sink_from_url

_SINKS = frozenset({"HttpSink", "NatsSink", "sink_from_url"})


def __getattr__(name: str) -> object:
    if name in _SINKS:
        from aifr.audit import sinks

        return getattr(sinks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EXPORT_FORMATS",
    "GENESIS_HASH",
    "MAX_BATCH",
    "REDACTED",
    "AuditEvent",
    "AuditLedger",
    "AuditRecord",
    "AuditStore",
    "ChainBuilder",
    "ChainHead",
    "EventTemplate",
    "Checkpoint",
    "CopyReport",
    "HttpSink",
    "LedgerStats",
    "NatsSink",
    "Outbox",
    "SinkCopy",
    "Problem",
    "Sink",
    "VerifyReport",
    "Witness",
    "load_or_create_signing_key",
    "parse_timestamp",
    "public_key_hex",
    "random_hex",
    "record_hash",
    "record_line",
    "redact_details",
    "redact_text",
    "sign_checkpoint",
    "sink_from_url",
    "compare_with_copy",
    "read_copy_lines",
    "verify_chain",
    "write_jsonl",
]
