"""``SqliteWorkerRegistry``: the worker processes sharing one SQLite state file."""

from __future__ import annotations

import builtins

from aifr.storage.sqlite.database import SqliteDatabase, translate_sqlite_errors
from aifr.storage.sqlite.runs import WORKFLOW_MIGRATIONS
from aifr.storage.worker_rows import FORGET_AFTER_S, statements, worker_from_row, worker_params
from aifr.workflows.ports import WorkerInfo

__all__ = ["SqliteWorkerRegistry"]

_SQL = statements("?")


class SqliteWorkerRegistry:
    """The :class:`~aifr.workflows.ports.WorkerRegistry` port on the state database.

    Each write is its own short transaction on the calling thread's connection (the
    writer gate orders it among the processes), outside the runs' group commit: a
    heartbeat every few seconds needs no fsync shared with steps.
    """

    def __init__(self, database: SqliteDatabase) -> None:
        self._db = database
        database.migrate("workflows", WORKFLOW_MIGRATIONS)

    def announce(self, worker: WorkerInfo) -> None:
        """Add or refresh ``worker``; forget workers unseen for a day."""
        with self._db.transaction() as conn, translate_sqlite_errors("registering a worker"):
            conn.execute(_SQL.forget, (worker.seen_at - FORGET_AFTER_S,))
            conn.execute(_SQL.announce, worker_params(worker))

    def seen(self, worker_id: str, now: float) -> bool:
        """Note the worker alive at ``now``; ``False`` when its row is gone (re-announce)."""
        with self._db.transaction() as conn, translate_sqlite_errors("refreshing a worker"):
            return conn.execute(_SQL.seen, (now, worker_id)).rowcount == 1

    def leave(self, worker_id: str) -> None:
        """Remove a worker that stopped."""
        with self._db.transaction() as conn, translate_sqlite_errors("removing a worker"):
            conn.execute(_SQL.leave, (worker_id,))

    def workers(self, now: float) -> builtins.list[WorkerInfo]:
        """Every known worker, newest first, with its unexpired leases counted."""
        with translate_sqlite_errors("listing workers"):
            rows = self._db.connect().execute(_SQL.workers, (now,)).fetchall()
        return [worker_from_row(row) for row in rows]

    def live_on(self, host: str, since: float) -> int:
        """How many workers on ``host`` were seen at ``since`` or later."""
        with translate_sqlite_errors("counting workers"):
            row = self._db.connect().execute(_SQL.live_on, (host, since)).fetchone()
        return int(row[0])
