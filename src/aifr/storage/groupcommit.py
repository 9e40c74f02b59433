"""Group commit: concurrent writers share one transaction, and so one durable commit.

A durable commit costs one flush of the log (an fsync on SQLite, a WAL flush on
PostgreSQL) however little it writes, so when many workflow runs finish steps at once
they should share it, as a database's own WAL group commit does. The first thread to
arrive leads: it opens one transaction, runs every queued job, commits, and only then
wakes the batch. Threads that arrived meanwhile form the next batch, led by the first
of them. A lone writer pays exactly one transaction and no hand-off.

A batch is optimistic. Its jobs first run one after another with no savepoint between
them: a refused write is rare, and a savepoint costs two statements per job (on
SQLite a third of a step's statements, each a release of the GIL that the threads
waiting for it turn into a switch; on PostgreSQL a sync each). If a job raises, that
whole attempt is rolled back (nothing of it was written) and the batch runs again the
careful way, each job inside its own savepoint, so the job that raised rolls back alone
and gets its error while the others commit once. A job is therefore a function of its
connection: whatever it reads (the audit chain's head included) it reads inside it, so
running it again after a rollback doubles nothing.

A waiting job sleeps on a bare lock held from its creation, which whoever wakes it
releases: one C call on each side, where an ``Event`` costs a condition, its lock and
a waiter lock per wait, in Python (about 2 µs more per job uncontended, more when the
waiter really sleeps).

A job's writes, including an audit record it appends, are durable when its call
returns, exactly as with a private transaction: nobody is released before the shared
commit, and a failed commit fails every job of the batch (none of them was written).
Conditional writes keep their meaning inside a batch: a fenced step write (a lease
epoch that moved on) matches nothing, its job raises, and only its savepoint is rolled
back.

:class:`GroupCommit` is the backend-neutral core; each backend supplies the
transaction and the savepoint (``aifr.storage.sqlite.groupcommit``,
``aifr.storage.postgres.groupcommit``).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

from aifr.errors import AifrError, StorageError

__all__ = ["MAX_GROUP", "GroupCommit"]

C = TypeVar("C")
T = TypeVar("T")
MAX_GROUP = 256
"""Most jobs one shared transaction carries."""


class _Refused(Exception):  # noqa: N818  # internal signal, never raised to a caller
    """A job of a batch's first attempt raised: roll the attempt back, then go job by job."""


class _Job(Generic[C, T]):
    __slots__ = ("error", "has_result", "is_leader", "order", "result", "wake", "work")

    def __init__(self, work: Callable[[C], T], order: str) -> None:
        self.work = work
        self.order = order
        self.result: T | None = None
        self.has_result = False
        self.error: AifrError | None = None
        self.is_leader = False
        self.wake = threading.Lock()  # held until whoever wakes the job releases it
        self.wake.acquire()

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        if not self.has_result:
            raise StorageError("a grouped write finished without a result")
        return self.result  # type: ignore[return-value]  # set together with has_result


class GroupCommit(ABC, Generic[C]):
    """Runs write jobs in shared transactions on one database. Thread-safe.

    ``commits`` counts transactions, ``jobs`` the jobs they carried and
    ``largest_batch`` the most jobs one of them carried.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[_Job[C, object]] = []
        self._is_leading = False
        self._inside = threading.local()
        self.commits = 0
        self.jobs = 0
        self.largest_batch = 0

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[C]:
        """One write transaction: committed on a clean exit, rolled back on an error."""

    @abstractmethod
    def _savepoint(self, conn: C) -> AbstractContextManager[object]:
        """A savepoint inside the open transaction, rolled back alone on an error."""

    def waiting(self) -> int:
        """Jobs queued behind the transaction now being written."""
        with self._lock:
            return len(self._queue)

    def run(self, work: Callable[[C], T], order: str = "") -> T:
        """Run ``work(conn)`` inside a write transaction; returns once it is committed.

        A batch runs its jobs sorted by ``order`` (stable): a backend whose jobs each
        lock the rows of one run passes the run's id, so every batch takes its row locks
        in one global order and two batches cannot deadlock on each other's rows.

        Raises:
            AifrError: whatever ``work`` raised (its writes are rolled back, the other
                jobs of its batch are not), or a ``StorageError`` when the shared commit
                failed (no job of the batch was written), or at once when called from
                inside a job of this group on the same thread (it would wait for its
                own transaction forever).
        """
        if getattr(self._inside, "job", False):
            raise StorageError(
                "a grouped write was started inside another grouped write's job;"
                " do the write through the job's connection instead"
            )
        with self._lock:
            if self._is_leading:
                job: _Job[C, T] | None = _Job(work, order)
                self._queue.append(job)  # type: ignore[arg-type]  # jobs differ only in T
            else:
                self._is_leading = True
                job = None
        if job is None:
            return self._alone(work)
        job.wake.acquire()
        if not job.is_leader:
            return job.outcome()
        self._lead()
        return job.outcome()

    def _alone(self, work: Callable[[C], T]) -> T:
        """Nobody else is writing: the transaction itself is the job's savepoint.

        No job object, queue or hand-off: a lone writer pays one transaction and nothing
        more. An error rolls the transaction back and reaches the caller unchanged.
        """
        self._inside.job = True
        try:
            with self._transaction() as conn:
                return work(conn)
        finally:
            self._inside.job = False
            self._hand_on(1)

    def _lead(self) -> None:
        with self._lock:
            batch, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
        self._inside.job = True
        try:
            self._commit(batch)
        finally:
            self._inside.job = False
            self._hand_on(len(batch))
            for job in batch:
                job.wake.release()

    def _hand_on(self, jobs: int) -> None:
        """Count a finished transaction and pass leadership to the next waiting writer."""
        with self._lock:
            self.commits += 1
            self.jobs += jobs
            self.largest_batch = max(self.largest_batch, jobs)
            successor = self._queue[0] if self._queue else None
            if successor is not None:
                successor.is_leader = True
            else:
                self._is_leading = False
        if successor is not None:
            successor.wake.release()

    def _commit(self, batch: list[_Job[C, object]]) -> None:
        """A batch: first all its jobs at once, job by job only if one of them raised."""
        jobs = sorted(batch, key=lambda queued: queued.order)
        try:
            results = self._all_at_once([job.work for job in jobs])
            if results is None:
                self._job_by_job(jobs)
                return
        except AifrError as exc:  # the commit failed: no job of the batch was written
            for job in jobs:
                if job.error is None:  # a job refused alone keeps its own error
                    job.error = exc
                    job.has_result = False
            return
        except Exception as exc:  # a follower must never sleep forever on a failed batch
            for job in jobs:
                job.error = StorageError(f"grouped commit failed: {exc!r}")
            raise
        for job, result in zip(jobs, results, strict=True):
            job.result = result
            job.has_result = True

    def _all_at_once(self, works: list[Callable[[C], object]]) -> list[object] | None:
        """Run ``works`` in one transaction with no savepoint; their results once committed.

        ``None``: a job raised an :class:`~aifr.errors.AifrError` and the transaction
        was rolled back, so the batch may run again job by job. Anything else a job
        raises rolls the transaction back and reaches the leader, as a failed commit does.
        """
        results: list[object] = []
        try:
            with self._transaction() as conn:
                for work in works:
                    try:
                        results.append(work(conn))
                    except AifrError as exc:
                        raise _Refused from exc
        except _Refused:
            return None
        return results

    def _job_by_job(self, jobs: list[_Job[C, object]]) -> None:
        """The careful attempt: each job in its own savepoint, rolled back alone."""
        with self._transaction() as conn:
            for job in jobs:
                self._one(conn, job)

    def _one(self, conn: C, job: _Job[C, object]) -> None:
        try:
            with self._savepoint(conn):
                job.result = job.work(conn)
                job.has_result = True
        except AifrError as exc:
            job.error = exc
            job.has_result = False
