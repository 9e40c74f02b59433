"""Run every ``benchmarks/*_bench.py`` in turn: ``python -m benchmarks [NAME ...] [OPTIONS]``."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from benchmarks import goals


def main() -> int:
    here = Path(__file__).parent
    args = sys.argv[1:]
    split = next((i for i, arg in enumerate(args) if arg.startswith("-")), len(args))
    wanted, options = set(args[:split]), args[split:]
    scripts = sorted(here.glob("*_bench.py"))
    failed: list[str] = []
    for script in scripts:
        if (
            wanted
            and script.stem.removesuffix("_bench") not in wanted
            and script.stem not in wanted
        ):
            continue
        print(f"== {script.stem}", flush=True)
        # Each script parses its own argv (the options after the names) and ends in
        # sys.exit(main()): catch the exit, or the first script would end the whole run.
        saved, sys.argv = sys.argv, [str(script), *options]
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as done:
            if done.code not in (None, 0):
                failed.append(f"{script.stem} (exit {done.code})")
        finally:
            sys.argv = saved
    goals.print_summary()
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
