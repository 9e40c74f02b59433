"""Group commit on PostgreSQL: concurrent runs of one process share one transaction.

The leader/follower core is :class:`aifr.storage.groupcommit.GroupCommit`. Here a batch
is one transaction on one pooled connection, and each job runs inside its own savepoint
(``conn.transaction()`` nested). Instead of N transactions each paying its own WAL
flush, N jobs share one. The steps of ``aifr worker --concurrency N`` engines finishing
together therefore cost about one commit between them.

The audit chain's lock comes last. A job writes its rows (run, steps, outbox, the
fenced conditional writes) and only *asks* for its audit record
(:meth:`PostgresGroupCommit.audit_later`); once every job of the batch has run, the
transaction takes the chain's lock, reads the head, inserts all the batch's records in
one go, runs their follow-ups (a step row's ``audit_id``) and commits. The lock is held
for those few statements and the commit's flush, not for the batch's row writes, so
other processes write their rows meanwhile and queue on the lock only for the tail.

Why this cannot deadlock: every writer takes the chain's lock last and once, and while
holding it touches only the chain (the head row it locked, new records with fresh
seqs) and rows its own transaction already locked before it asked for the chain. A
transaction holding the chain's lock therefore never waits for another lock, so no
wait cycle can pass through the chain. Before the chain, each job locks the rows of one
run, and a batch runs its jobs in run-id order, so the batches of several processes
take their row locks in one global order and cannot deadlock on each other's rows
either (a late writer racing a run's new lease holder waits for it, then matches
nothing).

A job whose fenced write fails rolls back its savepoint, and the audit records it asked
for inside that savepoint are dropped with it: a refused write appends nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from aifr.errors import StorageError
from aifr.storage.groupcommit import GroupCommit
from aifr.storage.postgres.database import PostgresDatabase, translate_pg_errors

if TYPE_CHECKING:
    import psycopg

    from aifr.audit import AuditEvent, AuditLedger, AuditRecord, ChainBuilder, ChainHead

__all__ = ["PendingAudit", "PostgresGroupCommit"]


class PendingAudit:
    """An audit record a job asked for; written at its transaction's end, under the lock.

    :attr:`record` is there once the transaction wrote it (before the commit, so the
    caller reads it after its ``run`` returned).
    """

    __slots__ = ("_record", "after", "build")

    def __init__(
        self,
        build: ChainBuilder,
        after: Callable[[psycopg.Connection[tuple[Any, ...]], AuditRecord], None] | None,
    ) -> None:
        self.build = build
        self.after = after
        self._record: AuditRecord | None = None

    @property
    def record(self) -> AuditRecord:
        """The appended record."""
        if self._record is None:
            raise StorageError("an audit record asked for was not written")
        return self._record


def _chained(pending: list[PendingAudit]) -> ChainBuilder:
    """One builder chaining every pending record onto the head, in the order asked."""

    def build(head: ChainHead) -> list[AuditRecord]:
        from_head = head
        records: list[AuditRecord] = []
        for item in pending:
            built = item.build(from_head)
            records.extend(built)
            from_head = type(head)(built[-1].seq, built[-1].hash)
        return records

    return build


class PostgresGroupCommit(GroupCommit["psycopg.Connection[tuple[Any, ...]]"]):
    """Write jobs on one PostgreSQL database in shared transactions, the chain's lock last."""

    def __init__(self, database: PostgresDatabase, ledger: AuditLedger) -> None:
        super().__init__()
        self._db = database
        self._ledger = ledger
        self._pending: list[PendingAudit] | None = None

    def audit_later(
        self,
        event: AuditEvent,
        after: Callable[[psycopg.Connection[tuple[Any, ...]], AuditRecord], None] | None = None,
    ) -> PendingAudit:
        """Ask, from inside a job, for ``event`` to be appended at the transaction's end.

        ``after(conn, record)`` runs once the record exists, still before the commit
        (for a row that names the record). Call only from inside a job.

        Raises:
            AuditError: the event is not JSON-safe (the job fails alone).
        """
        if self._pending is None:
            raise StorageError("audit_later outside a grouped transaction")
        item = PendingAudit(self._ledger.builder_for(event), after)
        self._pending.append(item)
        return item

    @contextmanager
    def savepoint(self, conn: psycopg.Connection[tuple[Any, ...]]) -> Iterator[None]:
        """A savepoint whose rollback also drops the audit records asked for inside it."""
        mark = len(self._pending) if self._pending is not None else 0
        try:
            with conn.transaction():
                yield
        except BaseException:
            if self._pending is not None:
                del self._pending[mark:]
            raise

    def _transaction(self) -> AbstractContextManager[psycopg.Connection[tuple[Any, ...]]]:
        return self._shared()

    @contextmanager
    def _shared(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        self._pending = []
        try:
            with (
                translate_pg_errors("committing a group of writes"),
                self._db.transaction() as conn,
            ):
                yield conn
                self._append_pending(conn)
        finally:
            self._pending = None

    def _append_pending(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Lock the chain, read its head, insert the batch's records, run their follow-ups."""
        pending = self._pending or []
        if not pending:
            return
        # Pipeline mode: the lock and the head read travel together (the head is read
        # after the lock is granted, in its own snapshot), then the inserts and the
        # follow-ups together: two round trips under the lock, plus the commit.
        with conn.pipeline():
            records = self._ledger.store.append_in(conn, _chained(pending))
            if len(records) != len(pending):
                raise StorageError("the audit chain returned a different number of records")
            for item, record in zip(pending, records, strict=True):
                item._record = record  # set by the one transaction that wrote it
                if item.after is not None:
                    item.after(conn, record)

    def _savepoint(
        self, conn: psycopg.Connection[tuple[Any, ...]]
    ) -> AbstractContextManager[object]:
        return self.savepoint(conn)
