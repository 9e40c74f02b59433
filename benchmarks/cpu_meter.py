"""CPU spent by a benchmark's processes and by the PostgreSQL server, over a timed block.

On a 2-core host a worker row's throughput is bounded by the cores: if one worker and
its share of the server keep 1.3 cores busy, two workers can give at most 2 / 1.3 of its
steps/s, however well they share. The scale-out benchmark meters every timed drain with
this to show that ceiling next to the ratio it bounds. The server's processes are all
counted (backends, WAL writer, checkpointer): they do the rows' work, and the benchmark
runs alone on its server.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

import psutil

__all__ = ["CpuMeter"]

SERVER_NAMES = frozenset({"postgres"})
"""Process names of the database server, counted with the benchmark's own processes."""


def _cpu_seconds(processes: Iterable[psutil.Process]) -> dict[int, float]:
    """User plus system CPU seconds of each process still alive, by pid."""
    seconds: dict[int, float] = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:  # gone meanwhile: its time is lost to both readings
            continue
        seconds[process.pid] = times.user + times.system
    return seconds


def _server_processes() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] in SERVER_NAMES]


class CpuMeter:
    """``with CpuMeter(pids) as meter: ...``; then :attr:`seconds` of CPU in the block.

    Counts the given processes and every PostgreSQL server process; a server process
    that started inside the block counts from zero (a backend forked for a new
    connection), one that ended inside it is not counted.
    """

    def __init__(self, pids: Iterable[int]) -> None:
        self._own = [psutil.Process(pid) for pid in pids]
        self._before: dict[int, float] = {}
        self.seconds = 0.0

    def __enter__(self) -> CpuMeter:
        self._before = _cpu_seconds([*self._own, *_server_processes()])
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        after = _cpu_seconds([*self._own, *_server_processes()])
        self.seconds = sum(value - self._before.get(pid, 0.0) for pid, value in after.items())
