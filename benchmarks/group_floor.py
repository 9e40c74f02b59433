"""The CPython floor for runs at once on one SQLite file: the leanest steps, group-committed.

``floors_on_threads`` (``benchmarks.floor``) puts each thread's runs on a file of its
own, so they share no lock and no chain; on a settled file each of their commits still
pays its own flush, and 8 threads of it gain little over one. What issue 24 asks of runs
at once is group commit: steps of different runs that finish together share one
transaction, and so one flush. This floor does exactly that and nothing more, for the
same lean step (``LeanFloor``'s validation, memoized decision and chained record): every
thread's runs on one file with one audit chain, as aifr keeps them, written through the
least leader/follower batching there is. So its 8 threads over 1 is what running 8 runs
at once on threads of one CPython process can gain on one state database here, with a
step as cheap as Python allows: the yardstick for aifr's own 8 runs / 1.

Like ``floor.py`` it is a measuring stick with no error paths: a job that raised would
leave its batch's followers asleep.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.floor import LeanFloor
from benchmarks.threads import timed_on_threads

__all__ = ["GroupedLeanFloor", "LeanBatching", "grouped_floor_on_threads"]

Job = Callable[[sqlite3.Connection], object]


class _Waiter:
    __slots__ = ("done", "job", "wake")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.done = False
        self.wake = threading.Lock()  # held until whoever wakes the waiter releases it
        self.wake.acquire()


class LeanBatching:
    """The least group commit: whoever finds nobody writing leads, the rest queue.

    A leader writes its job, or the queue it heads, in one transaction, commits, hands
    the lead to the first job queued meanwhile and only then wakes the batch's others,
    as ``aifr.storage.groupcommit`` does, with none of its savepoints, error handling,
    ordering or counters beyond ``commits`` and ``jobs``.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._queue: list[_Waiter] = []
        self._leading = False
        self.commits = 0
        self.jobs = 0

    def write(self, job: Job) -> None:
        """Run ``job(conn)`` in a write transaction; returns once that is committed."""
        with self._lock:
            waiter = None
            if self._leading:
                waiter = _Waiter(job)
                self._queue.append(waiter)
            else:
                self._leading = True
        if waiter is None:
            self._commit([job])
            return
        waiter.wake.acquire()
        if waiter.done:
            return
        with self._lock:  # woken to lead: the queue starts with this waiter
            batch, self._queue = self._queue, []
        self._commit([queued.job for queued in batch])
        for queued in batch[1:]:
            queued.done = True
            queued.wake.release()

    def _commit(self, jobs: list[Job]) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        for job in jobs:
            job(conn)
        conn.execute("COMMIT")
        with self._lock:
            self.commits += 1
            self.jobs += len(jobs)
            successor = self._queue[0] if self._queue else None
            if successor is None:
                self._leading = False
        if successor is not None:
            successor.wake.release()


class GroupedLeanFloor(LeanFloor):
    """``LeanFloor``'s runs from any number of threads, their writes batched on one file."""

    def __init__(self, path: Path, synchronous: str) -> None:
        super().__init__(path, synchronous)
        self.batching = LeanBatching(self.conn)

    def run(self, steps: int) -> None:
        """A run of ``steps`` no-op steps: its start and each step one batched write."""
        run_id = os.urandom(16).hex()
        self.batching.write(functools.partial(self.start_in, run_id=run_id, steps=steps))
        for n in range(steps):
            invocation = self._governance.step(time.perf_counter(), n, run_id)
            self.batching.write(
                functools.partial(
                    self.record_in,
                    invocation=invocation,
                    run_id=run_id,
                    step_id=f"s{n}",
                    last=n == steps - 1,
                )
            )


def grouped_floor_on_threads(threads: int, runs_each: int, steps: int, synchronous: str) -> float:
    """Steps/s of ``threads`` threads each driving ``runs_each`` runs of one grouped floor.

    The file is settled first (``LeanFloor.settle``), as aifr's rows are, after 3 runs.
    """
    directory = Path(tempfile.mkdtemp(prefix="aifr-group-floor-"))
    floor = GroupedLeanFloor(directory / "floor.db", synchronous)
    try:
        for _ in range(3):
            floor.run(steps)
        floor.settle(steps)

        def drive() -> None:
            for _ in range(runs_each):
                floor.run(steps)

        return threads * runs_each * steps / timed_on_threads([drive] * threads)
    finally:
        floor.close()
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()
