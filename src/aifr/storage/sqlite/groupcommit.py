"""Group commit: concurrent writers share one transaction, and so one fsync.

A durable SQLite commit costs one fsync however little it writes, so when many
workflow runs finish steps at once, :class:`GroupCommit` lets them share. The first
thread to arrive leads: it opens one ``BEGIN IMMEDIATE`` transaction, runs every queued
job inside its own savepoint (a job that raises rolls back alone and gets its error),
commits, and wakes the batch; threads that arrived meanwhile form the next batch. A
lone writer pays exactly one transaction and no hand-off.

Every job's writes, including its audit record appended with ``append_in``, are
durable when its call returns, exactly as with a private transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from aifr.errors import AifrError, StorageError
from aifr.storage.sqlite.database import SqliteDatabase, translate_sqlite_errors

__all__ = ["MAX_GROUP", "GroupCommit"]

T = TypeVar("T")
MAX_GROUP = 256
"""Most jobs one shared transaction carries."""


class _Job(Generic[T]):
    __slots__ = ("error", "has_result", "is_leader", "result", "wake", "work")

    def __init__(self, work: Callable[[sqlite3.Connection], T]) -> None:
        self.work = work
        self.result: T | None = None
        self.has_result = False
        self.error: AifrError | None = None
        self.is_leader = False
        self.wake = threading.Event()

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        if not self.has_result:
            raise StorageError("a grouped write finished without a result")
        return self.result  # type: ignore[return-value]  # set together with has_result


class GroupCommit:
    """Runs write jobs in shared transactions on one database. Thread-safe.

    ``commits`` and ``jobs`` count transactions and the jobs they carried.
    """

    def __init__(self, database: SqliteDatabase) -> None:
        self._db = database
        self._lock = threading.Lock()
        self._queue: list[_Job[object]] = []
        self._is_leading = False
        self.commits = 0
        self.jobs = 0

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(conn)`` inside a write transaction; returns once it is committed.

        Raises:
            AifrError: whatever ``work`` raised (its writes are rolled back), or a
                ``StorageError`` when the shared commit failed.
        """
        with self._lock:
            if self._is_leading:
                job: _Job[T] | None = _Job(work)
                self._queue.append(job)  # type: ignore[arg-type]  # jobs differ only in T
            else:
                self._is_leading = True
                job = None
        if job is None:
            return self._alone(work)
        job.wake.wait()
        if not job.is_leader:
            return job.outcome()
        self._lead()
        return job.outcome()

    def _alone(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Nobody else is writing: the transaction itself is the job's savepoint.

        No job object, queue or hand-off: a lone writer pays one transaction and nothing
        more. An error rolls the transaction back and reaches the caller unchanged.
        """
        try:
            with self._db.transaction() as conn:
                return work(conn)
        finally:
            self._hand_on(1)

    def _lead(self) -> None:
        with self._lock:
            batch, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
        try:
            self._commit(batch)
        finally:
            self._hand_on(len(batch))
            for job in batch:
                job.wake.set()

    def _hand_on(self, jobs: int) -> None:
        """Count a finished transaction and pass leadership to the next waiting writer."""
        with self._lock:
            self.commits += 1
            self.jobs += jobs
            successor = self._queue[0] if self._queue else None
            if successor is not None:
                successor.is_leader = True
            else:
                self._is_leading = False
        if successor is not None:
            successor.wake.set()

    def _commit(self, batch: list[_Job[object]]) -> None:
        try:
            with self._db.transaction() as conn:
                for job in batch:
                    self._one(conn, job)
        except AifrError as exc:
            for job in batch:
                if job.error is None:
                    job.error = exc
                    job.has_result = False
        except Exception as exc:  # a follower must never sleep forever on a failed batch
            for job in batch:
                job.error = StorageError(f"grouped commit failed: {exc!r}")
            raise

    @staticmethod
    def _one(conn: sqlite3.Connection, job: _Job[object]) -> None:
        with translate_sqlite_errors("opening a savepoint"):
            conn.execute("SAVEPOINT grouped_job")
        try:
            job.result = job.work(conn)
            job.has_result = True
        except AifrError as exc:
            job.error = exc
            with translate_sqlite_errors("rolling back a savepoint"):
                conn.execute("ROLLBACK TO grouped_job")
        with translate_sqlite_errors("releasing a savepoint"):
            conn.execute("RELEASE grouped_job")
