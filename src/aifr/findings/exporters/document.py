"""Findings as JSON: one array of Finding documents, or JSON Lines, streamed.

Each finding is written as the model dumps it, so the output validates against
``schemas/finding.json`` and reads back with ``Finding.model_validate_json``. This is the
lossless export: evidence, rule metadata and the scanner's unmapped fields included.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

from aifr.findings.models import Finding

__all__ = ["write_json"]


def write_json(findings: Iterable[Finding], out: TextIO, *, lines: bool = False) -> int:
    """Write ``findings`` as a JSON array (or one object per line); returns the count."""
    count = 0
    if lines:
        for finding in findings:
            out.write(finding.model_dump_json())
            out.write("\n")
            count += 1
        return count
    out.write("[")
    for finding in findings:
        out.write(",\n" if count else "\n")
        out.write(finding.model_dump_json())
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count
