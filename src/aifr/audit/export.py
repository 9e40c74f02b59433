"""Audit records as JSON lines: one record per line, every field, in seq order.

The line is the record's flat form (:meth:`AuditRecord.to_dict`), which carries
``prev_hash`` and ``hash``, so an export can be checked against the live chain or a
checkpoint later, and loaded by any log tool.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TextIO

from aifr.audit.record import AuditRecord

__all__ = ["EXPORT_FORMATS", "record_line", "write_jsonl"]

EXPORT_FORMATS = ("jsonl",)


def record_line(record: AuditRecord) -> str:
    """One record as a compact JSON line (keys sorted, UTF-8 kept, no trailing newline)."""
    return json.dumps(record.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def write_jsonl(records: Iterable[AuditRecord], stream: TextIO) -> int:
    """Write ``records`` to ``stream`` as JSON lines; returns how many were written."""
    count = 0
    for record in records:
        stream.write(record_line(record) + "\n")
        count += 1
    return count
