"""``aifr worker`` under a burst of SIGTERM and SIGINT: it stops once and exits cleanly.

Its handlers used to stop the worker themselves, setting the very events its main
thread waits on (``Event.wait`` between polls): a signal landing as that thread took
an event's lock back waited for that lock in the thread holding it, for ever. Under
300 signals at once, 2 workers in 20 hung so (2026-11-29); with the handler writing
to a pipe and a thread of its own stopping the worker, none did.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from cli_kit import init_project

TRIES = 8
"""Workers stormed: the hang needed the race, about one worker in ten before the fix."""


def test_a_burst_of_signals_stops_the_worker_once_and_it_exits_cleanly(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = init_project(aifr_bin, tmp_path / "proj", clean_env, {})
    for _ in range(TRIES):
        worker = subprocess.Popen(
            [aifr_bin, "worker", "--poll", "0.01", "-p", str(project)],
            env=clean_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert worker.stdout is not None
        banner = worker.stdout.readline()
        assert banner.startswith("aifr worker"), banner
        for n in range(300):  # the main thread is in Event.wait most of the time
            try:
                worker.send_signal(signal.SIGTERM if n % 2 else signal.SIGINT)
            except ProcessLookupError:  # gone already: it stopped at the first ones
                break
        try:
            _, err = worker.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.communicate()
            raise AssertionError("the worker hung on a burst of signals") from None
        assert worker.returncode == 0, err
        assert "Traceback" not in err, err
