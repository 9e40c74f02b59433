"""Group commit on PostgreSQL: concurrent runs of one process share one transaction.

The leader/follower core is :class:`aifr.storage.groupcommit.GroupCommit`. Here a batch
is one transaction on one pooled connection: instead of N transactions each paying its
own WAL flush, N jobs share one. The steps of ``aifr worker --concurrency N`` engines
finishing together therefore cost about one commit between them.

A batch is optimistic: ``BEGIN``, every job's statements (in run-id order, with no
savepoint and no sync between them), the audit tail and ``COMMIT`` travel together in
one pipeline and the leader waits once, for ``COMMIT``'s answer. Fenced writes refuse
on the server (``AF001``, read as ``workflow.lease_lost``) and nothing waits for a row
count, so there is nothing to read before the end. A refusal or any other error of a
job aborts that whole transaction; once the server has confirmed its ``ROLLBACK``
(nothing of it was written), the batch runs again the careful way: each job in its own
savepoint whose answers are read on its own sync, so the failing job gets its error,
and only its writes and audit records are rolled back, while every other job commits
once. A job is a function of its connection whose records are asked for through
:meth:`PostgresGroupCommit.audit_later` into the transaction's list, so running it
again after a rollback doubles nothing. If the connection broke instead (``COMMIT`` may
have landed), nothing is retried and every job of the batch gets the error.

The audit chain's lock comes last. A job writes its rows (run, steps, outbox, the
fenced conditional writes) and only *asks* for its audit record
(:meth:`PostgresGroupCommit.audit_later`); once every job of the batch has run, one call
to the server function ``aifr_audit_append`` takes the chain's lock, reads the head,
computes and inserts all the batch's records and writes the completed steps' rows (each
once, its result with its record's id: ``aifr_audit_append_fenced_steps``), and
``COMMIT`` follows in the same round trip. In a batch's first attempt a completed step's
job sends nothing: the same call locks its row under its fence before it takes the
chain's lock (:attr:`PostgresGroupCommit.tail_locks`). The chain's lock is held on the
server only, for that call and the commit's flush, not for the batch's other row
writes, so other processes write their rows meanwhile and queue on the lock only for
the tail.

Why this does not deadlock: every writer takes the chain's lock last and once, and while
holding it touches only the chain (the head row it locked, new records with fresh
seqs) and rows its own transaction already locked before it asked for the chain. A
transaction holding the chain's lock therefore never waits for another lock, so no
wait cycle can pass through the chain. Before the chain, each job locks the rows of one
run, and a batch runs its jobs in run-id order (both attempts), so the batches of
several processes take their row locks in one global order and cannot deadlock on each
other's rows either (a late writer racing a run's new lease holder waits for it, then
matches nothing). A first attempt takes them in two passes, each in run-id order (the
jobs' own, then the completed steps' in the tail), so two first attempts could wait on
each other only if each were a late writer on a run the other holds (two leases taken
over at once, crosswise); PostgreSQL's deadlock detector then aborts one, which runs
again job by job, in one pass, where the late writes are refused.

In the careful retry, a job whose fenced write fails rolls back its savepoint, and the
audit records it asked for inside that savepoint are dropped with it: a refused write
appends nothing.

A lone writer runs a pipelined transaction too, waiting once for ``COMMIT`` (a job
that wants a refusal of its own to be survivable, such as a step that also ends its
run, syncs before its savepoint). A lone writer whose job is a :class:`OneStatement` (a
step's result) does not open a transaction at all: the job's one statement, a server
function doing the same writes in the same order, runs in autocommit (one round trip).
On the server the statements run in the order sent: rows first, then the chain.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from aifr.errors import AifrError, StorageError
from aifr.storage.groupcommit import GroupCommit
from aifr.storage.postgres.audit import (
    APPEND_CALL,
    STEPS_APPEND_CALL,
    append_fields,
    appended_records,
    text_array,
)
from aifr.storage.postgres.database import PostgresDatabase, import_psycopg, translate_pg_errors

if TYPE_CHECKING:
    import psycopg

    from aifr.audit import AuditEvent, AuditLedger, AuditRecord
    from aifr.audit.ledger import PreparedEvent

__all__ = ["OneStatement", "PendingAudit", "PostgresGroupCommit", "StepWrite"]

T = TypeVar("T")
_COMMITTING = "committing a group of writes"


class StepWrite(NamedTuple):
    """A completed step's row, written in its batch's audit tail with its record's id.

    The row is locked under its fence by the step's job, or, in a batch's first attempt,
    by the tail (``refused`` set); the tail writes it once (columns as stored: output and
    result are JSON text).
    """

    run_id: str
    step_id: str
    attempt: int
    output: str | None
    request_digest: str | None
    result: str | None
    finished_at: float
    fence: int | None = None
    """The lease epoch the row is written under (``None``: unfenced)."""
    refused: str | None = None
    """The refusal's message when the tail is to lock the row; ``None``: the job locked it."""


class PendingAudit:
    """An audit record a job asked for; written at its transaction's end, under the lock.

    :attr:`record` is there once the transaction committed (the caller reads it after
    its ``run`` returned). ``link`` is a completed step whose row the statement that
    appends the record writes, with the record's id as its ``audit_id``.
    """

    __slots__ = ("_record", "link", "prepared")

    def __init__(self, prepared: PreparedEvent, link: StepWrite | None) -> None:
        self.prepared = prepared
        self.link = link
        self._record: AuditRecord | None = None

    def resolve(self, record: AuditRecord) -> None:
        """Note the record written for this request (by a lone writer's one statement)."""
        self._record = record

    @property
    def record(self) -> AuditRecord:
        """The appended record."""
        if self._record is None:
            raise StorageError("an audit record asked for was not written")
        return self._record


class OneStatement(Generic[T]):
    """A job that, when its writer is alone, is sent as one statement in autocommit.

    ``work(conn)`` is the job as it runs inside a shared transaction (its audit records
    asked for with :meth:`PostgresGroupCommit.audit_later`, appended at the batch's
    end); ``alone(conn)`` does the same writes, audit record included, in one statement
    on a connection outside any transaction (a server function that takes the rows'
    locks first and the chain's last, as a batch does). A lone writer then pays one
    round trip and one statement instead of ``BEGIN``, its writes, the append and
    ``COMMIT`` in a pipeline.
    """

    __slots__ = ("alone", "work")

    def __init__(
        self,
        work: Callable[[psycopg.Connection[tuple[Any, ...]]], T],
        alone: Callable[[psycopg.Connection[tuple[Any, ...]]], T],
    ) -> None:
        self.work = work
        self.alone = alone

    def __call__(self, conn: psycopg.Connection[tuple[Any, ...]]) -> T:
        """Run the job inside a shared transaction."""
        return self.work(conn)


def _settle(pipeline: psycopg.Pipeline) -> None:
    """Read back whatever is in flight, ignoring its errors (they are being handled)."""
    with contextlib.suppress(import_psycopg().Error):
        pipeline.sync()


def _in_transaction(conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
    """Whether ``conn`` is inside a transaction (open or aborted), or its state is unknown."""
    return conn.info.transaction_status is not import_psycopg().pq.TransactionStatus.IDLE


def _rolled_back(conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
    """Roll back a failed pipelined transaction; whether the server confirmed it.

    After an error in a pipeline the server skips everything up to the sync, ``COMMIT``
    included, so a confirmed ``ROLLBACK`` proves that none of it was written. A broken
    connection confirms nothing: ``COMMIT`` may have been applied before it broke.
    """
    try:
        conn.execute("ROLLBACK")
    except import_psycopg().Error:
        return False
    return not conn.closed


def _run(checks: list[Callable[[], None]]) -> None:
    _run_from(checks, 0)


def _run_from(checks: list[Callable[[], None]], mark: int) -> None:
    """Run (and forget) the checks from ``mark`` on; the first that raises stops the rest."""
    pending = checks[mark:]
    del checks[mark:]
    for check in pending:
        check()


class PostgresGroupCommit(GroupCommit["psycopg.Connection[tuple[Any, ...]]"]):
    """Write jobs on one PostgreSQL database in shared transactions, the chain's lock last."""

    def __init__(self, database: PostgresDatabase, ledger: AuditLedger) -> None:
        super().__init__()
        self._db = database
        self._ledger = ledger
        self._pending: list[PendingAudit] | None = None
        self._checks: list[Callable[[], None]] | None = None
        self._pipeline: psycopg.Pipeline | None = None
        self._depth = 0
        self._at_once = False  # in a batch's first attempt: no savepoints, no syncs

    def audit_later(self, event: AuditEvent, link: StepWrite | None = None) -> PendingAudit:
        """Ask, from inside a job, for ``event`` to be appended at the transaction's end.

        ``link`` is a completed step whose row (locked by the job under its fence) the
        statement that appends the record writes, the record's id as its ``audit_id``.
        Call only from inside a job.

        Raises:
            AuditError: the event is not JSON-safe (the job fails alone).
        """
        return self.prepared_later(self._ledger.prepare(event), link)

    def prepared_later(
        self, prepared: PreparedEvent, link: StepWrite | None = None
    ) -> PendingAudit:
        """:meth:`audit_later` for an event the ledger prepared already (``AuditLedger.prepare``)."""
        if self._pending is None:
            raise StorageError("audit_later outside a grouped transaction")
        item = PendingAudit(prepared, link)
        self._pending.append(item)
        return item

    @property
    def tail_locks(self) -> bool:
        """Whether a job's plain fenced row lock may be left to the batch's audit tail.

        True in a batch's first attempt only, where any refusal sends the whole batch to
        its job-by-job retry: the tail locks such rows (:class:`StepWrite` ``refused``)
        before the chain's lock, and saves each job a statement. In the retry, and for a
        lone writer, a job locks its own row, so a refusal stays the job's alone.
        """
        return self._at_once

    def check_later(self, check: Callable[[], None]) -> None:
        """From inside a job: run ``check`` once the results sent so far are back.

        For a check on a statement's row count that the server does not make itself (the
        store's fenced writes do, see ``aifr_require_one``): the transaction is
        pipelined, so the count is known only after the next sync. ``check`` raises to
        refuse the job; it runs at the end of the job's savepoint, or for a lone writer
        on one sync before the audit tail is sent. Outside a grouped transaction it runs
        at once.
        """
        if self._checks is None:
            check()
        else:
            self._checks.append(check)

    def answered(self) -> None:
        """From inside a job: wait for the answers to what it sent so far (one sync).

        Before a savepoint whose refusal the job means to survive: a refusal of an
        earlier statement (the step's own fenced write) is raised here, as the job's,
        and not later, taken for one of the savepoint's. Outside a grouped transaction
        every statement was answered already, and in a batch's first attempt nothing is
        awaited (any refusal sends the batch to its job-by-job retry, where this syncs).

        Raises:
            WorkflowError: ``workflow.lease_lost``, a fenced write was refused.
            StorageError: a statement failed.
        """
        if not self._at_once:
            self._sync()

    @contextmanager
    def savepoint(self, conn: psycopg.Connection[tuple[Any, ...]]) -> Iterator[None]:
        """A savepoint whose rollback also drops the audit records asked for inside it.

        Inside a grouped transaction its statements' answers are read before it is
        released (one sync), and the checks asked for inside it run then: a database
        error or a refused check rolls back the savepoint alone. In a batch's first
        attempt it is a plain block: any error there sends the whole batch to its
        job-by-job retry, where this savepoint is real.
        """
        if self._at_once:
            yield
            return
        pipeline = self._pipeline
        if pipeline is None or self._pending is None or self._checks is None:
            with conn.transaction():
                yield
            return
        mark, checked = len(self._pending), len(self._checks)
        self._depth += 1
        name = f"aifr_job_{self._depth}"
        conn.execute(f"SAVEPOINT {name}")
        try:
            yield
            self._sync()  # its errors and checks stay its own
            _run_from(self._checks, checked)
            conn.execute(f"RELEASE {name}")
        except BaseException:
            del self._pending[mark:]
            del self._checks[checked:]
            _settle(pipeline)
            conn.execute(f"ROLLBACK TO {name}")
            conn.execute(f"RELEASE {name}")
            raise
        finally:
            self._depth -= 1

    def _sync(self) -> None:
        if self._pipeline is not None:
            with translate_pg_errors("a grouped write"):
                self._pipeline.sync()

    def _alone(self, work: Callable[[psycopg.Connection[tuple[Any, ...]]], T]) -> T:
        """A lone writer: a :class:`OneStatement` job runs as its one statement.

        Every other job runs in a pipelined transaction (the base class's way).
        """
        if not isinstance(work, OneStatement):
            return super()._alone(work)
        alone: Callable[[psycopg.Connection[tuple[Any, ...]]], T] = work.alone
        self._inside.job = True
        try:
            with (
                translate_pg_errors("a lone write"),
                self._db.connection() as conn,
            ):
                return alone(conn)
        finally:
            self._inside.job = False
            self._hand_on(1)

    def _all_at_once(
        self, works: list[Callable[[psycopg.Connection[tuple[Any, ...]]], object]]
    ) -> list[object] | None:
        """Run ``works`` in one transaction with no sync before ``COMMIT``; their results.

        ``None``: a job or statement failed, the transaction was rolled back (the
        server said so), and the batch may run again. Raises when that is not known
        (the connection broke) or a job raised something other than a database or
        :class:`~aifr.errors.AifrError` error.
        """
        psycopg = import_psycopg()
        self._pending = []
        self._checks = []
        self._at_once = True
        try:
            with (
                translate_pg_errors(_COMMITTING),
                self._db.connection() as conn,
            ):
                try:
                    with conn.pipeline() as pipeline:
                        self._pipeline = pipeline
                        conn.execute("BEGIN")
                        results = [work(conn) for work in works]
                        pending = self._pending
                        appended = self._send_tail(conn)
                        conn.execute("COMMIT")
                    # Leaving the pipeline synced it: that was the one wait, for COMMIT's
                    # answer or the first error (after which the server skipped the rest).
                except (psycopg.Error, AifrError) as exc:
                    if _rolled_back(conn):
                        return None
                    # In doubt, and the same for every job (even if it was a refusal).
                    raise StorageError(f"{_COMMITTING} failed: {exc}", action=_COMMITTING) from exc
                except BaseException:
                    _rolled_back(conn)
                    raise
                if appended is not None:
                    records = appended_records([p.prepared for p in pending], appended.fetchall())
                    for item, record in zip(pending, records, strict=True):
                        item._record = record  # set by the one transaction that wrote it
                return results
        finally:
            self._at_once = False
            self._pending = None
            self._checks = None
            self._pipeline = None

    def _transaction(self) -> AbstractContextManager[psycopg.Connection[tuple[Any, ...]]]:
        return self._shared()

    @contextmanager
    def _shared(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """One pipelined transaction: ``BEGIN`` travels with the first job's statements.

        ``conn.transaction()`` is not used: in pipeline mode it syncs on entering and
        leaving every block, which would cost a round trip per savepoint and two more per
        transaction. ``BEGIN``, savepoints and ``COMMIT`` are sent as statements instead,
        and ``COMMIT``'s answer is read before the writers are released: leaving the
        pipeline syncs it, and that sync is the wait for ``COMMIT`` (a sync of its own
        before leaving cost every such transaction a second round trip, for nothing).
        """
        self._pending = []
        self._checks = []
        try:
            with translate_pg_errors(_COMMITTING), self._db.connection() as conn:
                try:
                    with conn.pipeline() as pipeline:
                        self._pipeline = pipeline
                        try:
                            conn.execute("BEGIN")
                            yield conn
                            pending = self._pending
                            appended = self._send_tail(conn)
                            conn.execute("COMMIT")
                        except BaseException:
                            _settle(pipeline)
                            with contextlib.suppress(import_psycopg().Error):
                                conn.execute("ROLLBACK")
                                pipeline.sync()
                            raise
                    # Leaving the pipeline synced it: COMMIT's answer, durable (or the
                    # error of any statement, raised here: the server skipped COMMIT).
                except import_psycopg().Error:
                    if _in_transaction(conn):
                        _rolled_back(conn)  # COMMIT's sync failed: the transaction is aborted
                    raise
                if appended is not None:
                    records = appended_records([p.prepared for p in pending], appended.fetchall())
                    for item, record in zip(pending, records, strict=True):
                        item._record = record  # set by the one transaction that wrote it
        finally:
            self._pending = None
            self._checks = None
            self._pipeline = None

    def _send_tail(self, conn: psycopg.Connection[tuple[Any, ...]]) -> psycopg.Cursor[Any] | None:
        """Send the batch's records to ``aifr_audit_append`` (one statement); its cursor.

        The function takes the chain's lock, reads the head and inserts the records on
        the server, and the completed steps of the records' links are written, each with
        its record's id, in the same statement (``aifr_audit_append_fenced_steps``, which
        first locks the rows their jobs left to it); ``COMMIT`` follows without waiting,
        so no client round trip happens under the lock. Checks
        still left to the client (a write whose refusal is not raised on the server) run
        first, on one sync: never commit unchecked.
        """
        pending = self._pending or []
        checks = self._checks if self._checks is not None else []
        if checks:
            self._sync()
            _run(checks)
        if not pending:
            return None
        fields = append_fields([item.prepared for item in pending])
        links = [(n, item.link) for n, item in enumerate(pending, 1) if item.link is not None]
        if not links:
            return conn.execute(APPEND_CALL, (fields,))
        steps = [step for _, step in links]
        return conn.execute(
            STEPS_APPEND_CALL,
            (
                fields,
                text_array(n for n, _ in links),
                text_array(step.run_id for step in steps),
                text_array(step.step_id for step in steps),
                text_array(step.attempt for step in steps),
                text_array(step.output for step in steps),
                text_array(step.request_digest for step in steps),
                text_array(step.result for step in steps),
                text_array(repr(step.finished_at) for step in steps),
                text_array(step.fence for step in steps),
                text_array(step.refused for step in steps),
            ),
        )

    def _savepoint(
        self, conn: psycopg.Connection[tuple[Any, ...]]
    ) -> AbstractContextManager[object]:
        return self.savepoint(conn)
