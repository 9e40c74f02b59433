"""Shared by the findings tests and the golden regeneration script: inputs and their goldens.

Inputs are the shared scanner samples (``../shared/samples/scanners``, real tool output
and a few constructed files) and the fixtures under ``tests/fixtures/findings`` written
from FORMATS.md for generations that have no sample. Each input has one golden JSON file
under ``tests/golden/findings/<tool>/`` holding the detection and every parse event.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aifr.errors import FindingsError
from aifr.findings import ParsedFinding, ParseEvent, ParseProblem, SkippedRecord
from aifr.findings.parsers import detect_scanner, parse_findings

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SAMPLES = ROOT.parent / "shared" / "samples" / "scanners"
FIXTURES = TESTS / "fixtures" / "findings"
GOLDEN = TESTS / "golden" / "findings"
TOOLS = ("nuclei", "feroxbuster", "katana")


def inputs() -> list[Path]:
    """Every sample and fixture file, sorted, whatever its extension."""
    found: list[Path] = []
    for base in (SAMPLES, FIXTURES):
        for tool in TOOLS:
            found.extend(
                p for p in sorted((base / tool).iterdir()) if p.suffix in (".json", ".jsonl")
            )
    return found


def golden_path(source: Path) -> Path:
    """Where the golden of one input lives (samples and fixtures share a folder per tool)."""
    origin = "samples" if SAMPLES in source.parents else "fixtures"
    return GOLDEN / source.parent.name / f"{origin}--{source.name}.golden.json"


def event_json(event: ParseEvent) -> dict[str, Any]:
    """One parse event as plain JSON, tagged with its kind."""
    if isinstance(event, ParsedFinding):
        return {"finding": event.to_json()}
    if isinstance(event, SkippedRecord):
        return {
            "skipped": {
                "line": event.line,
                "scanner": event.scanner,
                "kind": event.kind,
                "reason": event.reason,
            }
        }
    assert isinstance(event, ParseProblem)
    return {"problem": {"line": event.line, "reason": event.reason}}


def parse_to_json(source: Path) -> dict[str, Any]:
    """The golden document of one input: its detection and all its events."""
    with source.open("rb") as stream:
        try:
            found = detect_scanner(stream)
            detection: dict[str, Any] | None = {
                "scanner": found.scanner,
                "generation": found.generation,
                "container": found.container,
                "line": found.line,
            }
        except FindingsError:
            detection = None
        events = [event_json(e) for e in parse_findings(stream)]
    return {"detection": detection, "events": events}


def dumps(document: dict[str, Any]) -> str:
    """The exact text of a golden file (stable key order, one trailing newline)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
