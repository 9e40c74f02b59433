"""``PostgresWorkerRegistry``: the worker processes, on any machine, sharing one database."""

from __future__ import annotations

import builtins

from aifr.storage.postgres.database import PostgresDatabase, translate_pg_errors
from aifr.storage.postgres.runs import PG_WORKFLOW_MIGRATIONS
from aifr.storage.worker_rows import FORGET_AFTER_S, statements, worker_from_row, worker_params
from aifr.workflows.ports import WorkerInfo

__all__ = ["PostgresWorkerRegistry"]

_SQL = statements("%s")


class PostgresWorkerRegistry:
    """The :class:`~aifr.workflows.ports.WorkerRegistry` port over PostgreSQL."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database
        database.migrate("workflows", PG_WORKFLOW_MIGRATIONS)

    def announce(self, worker: WorkerInfo) -> None:
        """Add or refresh ``worker``; forget workers unseen for a day."""
        with translate_pg_errors("registering a worker"), self._db.transaction() as conn:
            conn.execute(_SQL.forget, (worker.seen_at - FORGET_AFTER_S,))
            conn.execute(_SQL.announce, worker_params(worker))

    def seen(self, worker_id: str, now: float) -> bool:
        """Note the worker alive at ``now``; ``False`` when its row is gone (re-announce)."""
        with translate_pg_errors("refreshing a worker"), self._db.connection() as conn:
            return conn.execute(_SQL.seen, (now, worker_id)).rowcount == 1

    def leave(self, worker_id: str) -> None:
        """Remove a worker that stopped."""
        with translate_pg_errors("removing a worker"), self._db.connection() as conn:
            conn.execute(_SQL.leave, (worker_id,))

    def workers(self, now: float) -> builtins.list[WorkerInfo]:
        """Every known worker, newest first, with its unexpired leases counted."""
        with translate_pg_errors("listing workers"), self._db.connection() as conn:
            rows = conn.execute(_SQL.workers, (now,)).fetchall()
        return [worker_from_row(row) for row in rows]

    def live_on(self, host: str, since: float) -> int:
        """How many workers on ``host`` were seen at ``since`` or later."""
        with translate_pg_errors("counting workers"), self._db.connection() as conn:
            row = conn.execute(_SQL.live_on, (host, since)).fetchone()
        return 0 if row is None else int(row[0])
