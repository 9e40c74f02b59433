"""docs/stdlib.md documents every standard capability and every refusal rule."""

from __future__ import annotations

import re
from pathlib import Path

from aifr.stdlib import build_stdlib

REPO = Path(__file__).resolve().parents[3]
DOC = (REPO / "docs" / "stdlib.md").read_text()
SOURCES = [
    *(REPO / "src" / "aifr" / "stdlib").glob("*.py"),
    REPO / "src" / "aifr" / "invocation" / "sandbox.py",
]
RULE = re.compile(r'(?:rule=|refuse_path\(|_refuse\(|refuse_url\(|too_large\()\s*"([a-z_]+)"')


def test_every_capability_has_a_row(tmp_path: Path) -> None:
    for item in build_stdlib(project_dir=tmp_path, state_dir=tmp_path / ".aifr"):
        assert f"| `{item.id}` |" in DOC, item.id


def test_every_refusal_rule_in_the_code_is_documented() -> None:
    rules = {rule for path in SOURCES for rule in RULE.findall(path.read_text())}
    assert {
        "path_outside_root",
        "symlink_refused",
        "host_not_allowed",
        "command_not_allowed",
    } <= rules
    missing = sorted(rule for rule in rules if f"| `{rule}` |" not in DOC)
    assert missing == []
