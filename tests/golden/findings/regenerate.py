"""Rewrite the findings parser goldens from the current parser output (not run by tests).

Run ``.venv/bin/python tests/golden/findings/regenerate.py`` after a deliberate change to
the parsers, then read the diff before committing it: the goldens are the contract.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from findings_kit import dumps, golden_path, inputs, parse_to_json

if __name__ == "__main__":
    for source in inputs():
        target = golden_path(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(dumps(parse_to_json(source)), encoding="utf-8")
        print(target.relative_to(Path.cwd()) if target.is_relative_to(Path.cwd()) else target)
