"""Timing work on threads of one process, released together."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

__all__ = ["timed_on_threads"]


def timed_on_threads(bodies: Sequence[Callable[[], object]]) -> float:
    """Seconds from releasing one thread per body, all at once, until the last one ends.

    The threads are started first and wait at a barrier, so thread start-up is not timed.
    """
    barrier = threading.Barrier(len(bodies) + 1)

    def run(body: Callable[[], object]) -> None:
        barrier.wait()
        body()

    pool = [threading.Thread(target=run, args=(body,)) for body in bodies]
    for thread in pool:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in pool:
        thread.join()
    return time.perf_counter() - started
