"""Group commit on PostgreSQL: concurrent runs of one process share one transaction.

The leader/follower core is :class:`aifr.storage.groupcommit.GroupCommit`. Here a batch
is one transaction on one pooled connection that first takes the audit chain's lock
(every audited write takes it, so the lock is the point where writers queue anyway),
and each job runs inside its own savepoint (``conn.transaction()`` nested). Instead of
N transactions each holding the chain's lock through its own WAL flush, N jobs share
one lock hold and one flush. The steps of ``aifr worker --concurrency N`` engines
finishing together therefore cost about one commit between them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from aifr.storage.groupcommit import GroupCommit
from aifr.storage.postgres.database import PostgresDatabase, translate_pg_errors

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresGroupCommit"]


class PostgresGroupCommit(GroupCommit["psycopg.Connection[tuple[Any, ...]]"]):
    """Write jobs on one PostgreSQL database in shared transactions.

    ``prepare(conn)`` runs first in every transaction (the audit chain's lock).
    """

    def __init__(
        self,
        database: PostgresDatabase,
        prepare: Callable[[psycopg.Connection[tuple[Any, ...]]], None],
    ) -> None:
        super().__init__()
        self._db = database
        self._prepare = prepare

    def _transaction(self) -> AbstractContextManager[psycopg.Connection[tuple[Any, ...]]]:
        return self._shared()

    @contextmanager
    def _shared(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        with translate_pg_errors("committing a group of writes"), self._db.transaction() as conn:
            self._prepare(conn)
            yield conn

    def _savepoint(
        self, conn: psycopg.Connection[tuple[Any, ...]]
    ) -> AbstractContextManager[object]:
        return conn.transaction()
