"""Security findings: models, severity, scanner parsers and exports (DESIGN.md part G)."""

from aifr.findings.models import (
    FINDING_SCHEMA_VERSION,
    Finding,
    Project,
    Resource,
    ResourceKind,
    Run,
    TriageState,
    check_run_of_project,
    finding_id,
)
from aifr.findings.parsers import Detection, detect_scanner, parse_findings
from aifr.findings.records import ParsedFinding, ParseEvent, ParseProblem, SkippedRecord
from aifr.findings.severity import SEVERITY_ORDER, Severity, normalize_severity, severity_from_cvss

__all__ = [
    "FINDING_SCHEMA_VERSION",
    "SEVERITY_ORDER",
    "Detection",
    "Finding",
    "ParseEvent",
    "ParseProblem",
    "ParsedFinding",
    "Project",
    "Resource",
    "ResourceKind",
    "Run",
    "Severity",
    "SkippedRecord",
    "TriageState",
    "check_run_of_project",
    "detect_scanner",
    "finding_id",
    "normalize_severity",
    "parse_findings",
    "severity_from_cvss",
]
