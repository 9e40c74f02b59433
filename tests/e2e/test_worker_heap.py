"""A serving worker keeps its start-up heap out of the cyclic collector's full passes.

A worker lives for hours and drives steps that allocate and free small containers, so
CPython's collector runs its full pass every few thousand steps. That pass walked every
object start-up built (the modules, the app, its engines: about 93,000 here), 40 to 60
ms each time, with the step in flight waiting. ``aifr worker`` freezes them
(``gc.freeze()``) once started, after collecting start-up's garbage.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from cli_kit import init_project

REPORT = (
    "import atexit, gc, runpy, sys\n"
    "atexit.register(lambda: print('frozen', gc.get_freeze_count(), flush=True))\n"
    "sys.argv = ['aifr', *sys.argv[1:]]\n"
    "runpy.run_module('aifr', run_name='__main__')\n"
)
"""``aifr`` as its console script runs it, printing how many objects were frozen at exit."""


def test_a_serving_worker_has_frozen_what_start_up_built(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = init_project(aifr_bin, tmp_path / "proj", clean_env, {})
    worker = subprocess.Popen(
        [sys.executable, "-c", REPORT, "worker", "--poll", "0.05", "-p", str(project)],
        env=clean_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert worker.stdout is not None
    banner = worker.stdout.readline()
    assert banner.startswith("aifr worker"), banner
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=60)

    assert worker.returncode == 0, err
    frozen = [int(line.split()[1]) for line in out.splitlines() if line.startswith("frozen ")]
    assert frozen and frozen[0] > 10_000, out  # the app and its modules, not a handful
