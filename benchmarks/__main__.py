"""Run every ``benchmarks/*_bench.py`` in turn: ``python -m benchmarks [NAME ...]``."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    wanted = set(sys.argv[1:])
    scripts = sorted(here.glob("*_bench.py"))
    for script in scripts:
        if (
            wanted
            and script.stem.removesuffix("_bench") not in wanted
            and script.stem not in wanted
        ):
            continue
        print(f"== {script.stem}", flush=True)
        runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
