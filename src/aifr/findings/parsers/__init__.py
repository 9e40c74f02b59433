"""Parsers for Nuclei, Feroxbuster and Katana output, every generation of FORMATS.md."""

from aifr.findings.parsers.dispatch import (
    SCANNERS,
    Detection,
    ScannerChoice,
    detect_record,
    detect_scanner,
    parse_findings,
)

__all__ = [
    "SCANNERS",
    "Detection",
    "ScannerChoice",
    "detect_record",
    "detect_scanner",
    "parse_findings",
]
