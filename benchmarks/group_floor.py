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
from typing import NamedTuple

from benchmarks.floor import LeanFloor, user_cpu_per_step_us
from benchmarks.threads import timed_on_threads

__all__ = [
    "GroupedLeanFloor",
    "LeanBatching",
    "WeightedFloorRows",
    "grouped_floor_on_threads",
    "weighted_floor_rows",
]

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
            self.before_step()
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

    def before_step(self) -> None:
        """Work a step does before its write: none in the leanest floor."""


def grouped_floor_on_threads(
    threads: int, runs_each: int, steps: int, synchronous: str, *, burn: int = 0
) -> float:
    """Steps/s of ``threads`` threads each driving ``runs_each`` runs of one grouped floor.

    The file is settled first (``LeanFloor.settle``), as aifr's rows are, after 3 runs.
    ``burn``: the weight of each step (:class:`WeightedGroupedFloor`), 0 for the leanest.
    """
    directory = Path(tempfile.mkdtemp(prefix="aifr-group-floor-"))
    floor = WeightedGroupedFloor(directory / "floor.db", synchronous, burn)
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


def burn(rounds: int) -> int:
    """Interpreter work and nothing else, holding the GIL: ``rounds`` dict and str operations.

    The weight a :class:`WeightedGroupedFloor` adds to a step. Returns a value so the
    work is not optimized away (CPython would not, but a reader need not wonder).
    """
    kept: dict[int, str] = {}
    for n in range(rounds):
        kept[n & 15] = str(n)
    return len(kept)


class WeightedGroupedFloor(GroupedLeanFloor):
    """The grouped floor with each step made as heavy as aifr's, by pure interpreter work.

    The leanest step is mostly its commit's wait: a thread of it keeps a fifth of a core
    busy at FULL, so 8 of them have most of the interpreter to share. aifr's step is
    mostly CPU, so its 8 runs / 1 and its share of the GIL's ceiling are bounded by the
    step's weight before any batching or locking of its own counts. This floor separates
    the two: the same least batching, the same rows and chained record, with
    :func:`burn` done before each step's write (in the run's own thread, where it
    overlaps other threads' commits best; aifr does part of its work inside the shared
    transaction). Its 8/1 and its share of its own ceiling are what threads of one
    CPython process can give a step of that weight on one state database here.
    """

    def __init__(self, path: Path, synchronous: str, burn_rounds: int = 0) -> None:
        super().__init__(path, synchronous)
        self.burn_rounds = burn_rounds

    def before_step(self) -> None:
        """The step's weight: :func:`burn` of ``burn_rounds``."""
        burn(self.burn_rounds)


class WeightedFloorRows(NamedTuple):
    """The weighted grouped floor in one measurement (steps/s, CPU in µs)."""

    burn_rounds: int
    cpu_us: float
    """Its user CPU per step, one run at a time at ``synchronous=OFF``: the weight it got."""
    one: float
    """1 thread at FULL."""
    eight: float
    """8 threads at FULL."""

    @property
    def ceiling(self) -> float:
        """Its GIL's ceiling: 1 / its user CPU per step (as aifr's ``sqlite_ceiling``)."""
        return 1e6 / self.cpu_us


def _rounds_for(cpu_us: float, steps: int) -> tuple[int, float]:
    """Burn rounds that make a floor step cost ``cpu_us`` of user CPU, and what it then costs.

    Calibrated on the floor itself at OFF: its lean step's CPU, then one weighted guess
    measured and corrected once in proportion (the burn's cost per round is linear).
    """
    directory = Path(tempfile.mkdtemp(prefix="aifr-weighted-floor-"))
    floor = WeightedGroupedFloor(directory / "floor.db", "OFF")
    try:
        for _ in range(3):
            floor.run(steps)
        # Enough runs for a quarter of a second of CPU each: getrusage counts in ticks.
        runs = max(20, round(250_000 / (steps * max(1.0, cpu_us))))
        lean = user_cpu_per_step_us(functools.partial(floor.run, steps), runs * 4, steps)
        probe = 1000
        started = time.process_time()
        for _ in range(200):
            burn(probe)
        per_round = (time.process_time() - started) / (200 * probe) * 1e6
        floor.burn_rounds = max(0, round((cpu_us - lean) / per_round))
        measured = user_cpu_per_step_us(functools.partial(floor.run, steps), runs, steps)
        if measured > lean and floor.burn_rounds:
            per_round = (measured - lean) / floor.burn_rounds
            floor.burn_rounds = max(0, round((cpu_us - lean) / per_round))
            measured = user_cpu_per_step_us(functools.partial(floor.run, steps), runs, steps)
        return floor.burn_rounds, measured
    finally:
        floor.close()
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()


def weighted_floor_rows(cpu_us: float, runs: int, steps: int) -> WeightedFloorRows:
    """The grouped floor with steps of ``cpu_us`` user CPU: 1 and 8 threads at FULL.

    ``cpu_us`` is aifr's own user CPU per step measured the same way (one run at a time
    at OFF: ``benchmarks.workflow_bench.sqlite_cpu_ceiling``), so the floor carries aifr's
    weight and none of its machinery.
    """
    rounds, measured = _rounds_for(cpu_us, steps)
    return WeightedFloorRows(
        burn_rounds=rounds,
        cpu_us=measured,
        one=grouped_floor_on_threads(1, runs, steps, "FULL", burn=rounds),
        eight=grouped_floor_on_threads(8, max(1, runs // 8), steps, "FULL", burn=rounds),
    )
