"""Golden tests: parser output for every sample and fixture equals the committed JSON.

Regenerate with ``tests/golden/findings/regenerate.py`` (never run by the tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from findings_kit import golden_path, inputs, parse_to_json

INPUTS = inputs()


def test_every_sample_and_fixture_has_a_golden_and_no_golden_is_orphaned() -> None:
    expected = {golden_path(p) for p in INPUTS}
    present = set(golden_path(INPUTS[0]).parents[1].rglob("*.golden.json"))
    assert expected == present
    assert len(INPUTS) >= 30


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_parser_output_matches_the_committed_golden(source: Path) -> None:
    golden = json.loads(golden_path(source).read_text(encoding="utf-8"))
    assert parse_to_json(source) == golden
