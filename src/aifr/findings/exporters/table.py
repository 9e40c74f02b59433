"""Findings as CSV for spreadsheets, safe against formula injection, streamed.

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` (and, in some,
a tab or carriage return) as a formula, and scanner output is attacker-controlled: a
page title or an extracted value like ``=HYPERLINK(...)`` would run on the analyst's
machine. Every text cell starting with one of those characters is written with a
leading ``'`` (OWASP's advice), which spreadsheets show but do not evaluate.

CSV is a summary: one row per finding with the columns of :data:`CSV_COLUMNS`; lists are
joined with ``; ``. Evidence, rule metadata and raw fields are left out (use JSON for a
lossless export).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import datetime
from enum import Enum
from typing import TextIO

from aifr.findings.models import Finding

__all__ = ["CSV_COLUMNS", "escape_cell", "write_csv"]

CSV_COLUMNS: tuple[str, ...] = (
    "id",
    "project_id",
    "run_id",
    "last_run_id",
    "scanner",
    "scanner_generation",
    "scanner_version",
    "rule_id",
    "title",
    "severity",
    "scanner_severity",
    "cvss_score",
    "cvss_vector",
    "url",
    "host",
    "port",
    "scheme",
    "path",
    "method",
    "matched_at",
    "ip",
    "resource_id",
    "matcher_name",
    "extractor_name",
    "extracted_results",
    "status_code",
    "references",
    "cwe",
    "cve",
    "tags",
    "remediation",
    "rule_url",
    "description",
    "observed_at",
    "first_seen",
    "last_seen",
    "occurrences",
    "fingerprint",
    "triage_state",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(text: str) -> str:
    """The text with a leading ``'`` when a spreadsheet would read it as a formula."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _cell(value: object) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    if isinstance(value, Enum):
        return escape_cell(str(value.value))
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return escape_cell("; ".join(str(item) for item in value))
    return escape_cell(str(value))


def write_csv(findings: Iterable[Finding], out: TextIO) -> int:
    """Write a header and one row per finding to ``out``; returns how many rows."""
    # RFC 4180 line ends: the csv module quotes a field holding a character of the line
    # terminator, so with "\n" alone a bare "\r" in scanner output went out unquoted and
    # split the row in readers that treat CR as a line end.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for finding in findings:
        writer.writerow([_cell(getattr(finding, column)) for column in CSV_COLUMNS])
        count += 1
    return count
