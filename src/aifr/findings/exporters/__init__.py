"""Export findings as JSON, JSON Lines, CSV or SARIF 2.1.0, streamed to a text stream."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

from aifr.errors import ErrorCode, FindingsError
from aifr.findings.exporters.document import write_json
from aifr.findings.exporters.sarif import SARIF_VERSION, sarif_level, write_sarif
from aifr.findings.exporters.table import CSV_COLUMNS, escape_cell, write_csv
from aifr.findings.models import Finding

__all__ = [
    "CSV_COLUMNS",
    "EXPORT_FORMATS",
    "SARIF_VERSION",
    "escape_cell",
    "export_findings",
    "sarif_level",
    "write_csv",
    "write_json",
    "write_sarif",
]

EXPORT_FORMATS: tuple[str, ...] = ("json", "jsonl", "csv", "sarif")


def export_findings(export_format: str, findings: Iterable[Finding], out: TextIO) -> int:
    """Write ``findings`` to ``out`` in one of :data:`EXPORT_FORMATS`; returns the count.

    Raises:
        FindingsError: ``findings.unknown_format`` naming the formats accepted.
    """
    if export_format == "json":
        return write_json(findings, out)
    if export_format == "jsonl":
        return write_json(findings, out, lines=True)
    if export_format == "csv":
        return write_csv(findings, out)
    if export_format == "sarif":
        return write_sarif(findings, out)
    raise FindingsError(
        f"unknown export format {export_format!r}: choose {', '.join(EXPORT_FORMATS)}",
        code=ErrorCode.FINDINGS_UNKNOWN_FORMAT,
        export_format=export_format,
    )
