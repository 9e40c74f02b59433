"""One named prepared statement sent through libpq directly: the step's hot statement.

A lone workflow step is one statement (``aifr_step_recorded``), so whatever the client pays
per statement it pays per step. Through ``Connection.execute`` psycopg spends 85 to 100
µs of client CPU on a prepared 13-parameter statement here (a cursor, the parameters'
dumpers, its prepared-statement bookkeeping, the generator that drives the protocol, the
rows' loaders); the same statement sent with ``psycopg.pq``, psycopg's own documented
libpq binding, costs 45 to 55 µs. This module does only that: it prepares one statement
per connection under a name of its own, sends it with text parameters, waits for the
socket in Python with ``poll`` (so a signal is still handled while the server works, as
psycopg's wait does) and returns the rows as text. Errors are psycopg's own exception
classes (``psycopg.errors.error_from_result``), so :func:`translate_pg_errors` reads
them as before. Everything else in the PostgreSQL stores keeps using psycopg's API.
"""

from __future__ import annotations

import select
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from aifr.errors import StorageError
from aifr.storage.postgres.database import import_psycopg

if TYPE_CHECKING:
    import psycopg

    from aifr.storage.postgres.database import PostgresDatabase

__all__ = ["LaterRows", "PreparedCall"]

_UNDEFINED_STATEMENT: Final = b"26000"
"""SQLSTATE ``invalid_sql_statement_name``: the statement is not prepared on this session
(psycopg sends ``DEALLOCATE ALL`` after a ``ROLLBACK``/``DROP`` it saw, for its own)."""

_DUPLICATE_STATEMENT: Final = b"42P05"
"""SQLSTATE ``duplicate_prepared_statement``: the session has it already (we forgot it)."""


class PreparedCall:
    """``sql`` (``$1``-style placeholders) prepared as ``name`` on each connection it meets.

    Thread-safe: each caller passes the connection it holds (an idle one in autocommit
    mode, as :meth:`PostgresDatabase.connection` gives), and the set of connections the
    statement is prepared on is shared under a lock.

    ``typed``: its rows come back as psycopg's cursors give them (its loaders for the
    connection: ``int``, ``float``, ``bool``, ...), not as text; for a statement whose
    rows become records, such as a run's claim.
    """

    def __init__(self, name: str, sql: str, *, typed: bool = False) -> None:
        self.name = name.encode("ascii")
        self._sql = sql.encode("utf-8")
        self._typed = typed
        self._prepared: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        self._lock = threading.Lock()
        _CALLS.add(self)

    def rows(
        self, conn: psycopg.Connection[Any], params: Sequence[str | None]
    ) -> list[tuple[Any, ...]]:
        """Run the statement with ``params`` (text, ``None`` for NULL); its rows.

        As text, or loaded by psycopg's loaders for a ``typed`` statement.

        Raises:
            psycopg.Error: the statement failed (the class psycopg raises for its SQLSTATE),
                or the connection broke; a wait interrupted (a signal's exception) closes
                the connection, whose state is then unknown, and re-raises.
            StorageError: ``conn`` is not idle outside a transaction.
        """
        self._require_idle(conn)
        pgconn = conn.pgconn
        values = _encoded(params)
        if conn not in self._prepared:
            self._prepare(conn)
        result = self._exchange(conn, lambda: pgconn.send_query_prepared(self.name, values))
        if _undefined(result):  # deallocated behind our back: prepare it again, then run it
            _forget_session(conn)
            self._prepare(conn)
            result = self._exchange(conn, lambda: pgconn.send_query_prepared(self.name, values))
        self._check(conn, result)
        return self._rows_of(conn, result)

    def rows_before_commit(
        self, conn: psycopg.Connection[Any], params: Sequence[str | None]
    ) -> tuple[list[tuple[Any, ...]], Callable[[], None]]:
        """:meth:`rows`, returned as soon as the server has them, before its commit.

        The statement goes out in pipeline mode followed by a flush request and a sync:
        the server sends the rows once the statement has run, then commits (its implicit
        transaction ends at the sync) and says so. A step's rows come back here about as
        long before that confirmation as the commit takes to flush to disk, and the
        caller can work meanwhile. The second value reads the confirmation: it returns
        once the commit is confirmed and raises if it was not (the server's error, or
        the connection broke). ``conn`` stays in pipeline mode, unusable for anything
        else, until it is called; it must be called, exactly once.

        Raises:
            psycopg.Error: the statement itself failed (nothing was committed); the
                connection is out of pipeline mode again, as :meth:`rows` leaves it.
            StorageError: ``conn`` is not idle outside a transaction.
        """
        self._require_idle(conn)
        values = _encoded(params)
        if conn not in self._prepared:
            self._prepare(conn)
        result = self._rows_first(conn, values)
        if _undefined(result):  # deallocated behind our back: prepare it again, run it
            _confirmation(conn, failed=True)()
            _forget_session(conn)
            self._prepare(conn)
            result = self._rows_first(conn, values)
        pq = import_psycopg().pq
        if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            _confirmation(conn, failed=True)()
            self._check(conn, result)  # raises: an error, or a status no statement here has
        return self._rows_of(conn, result), _confirmation(conn)

    def rows_deferred(
        self,
        database: PostgresDatabase,
        conn: psycopg.Connection[Any],
        params: Sequence[str | None],
        action: str,
        *,
        beside: bool = False,
    ) -> list[tuple[Any, ...]]:
        """:meth:`rows`; inside ``database.deferring()``, back before the commit is confirmed.

        The connection (lent by ``database``) is then held until ``database.settle()``
        reads the confirmation, which it does before the thread's next use of the
        database, and which the engine does before the next effect; ``action`` names the
        write in the error of a commit that was not confirmed. ``beside``: the write does
        not depend on the thread's unconfirmed commit, if any (``conn`` was lent beside
        it), and is deferred beside it (see ``PostgresDatabase.may_hold``).
        """
        if not database.may_hold(beside=beside):
            return self.rows(conn, params)
        rows, confirm = self.rows_before_commit(conn, params)
        database.hold(conn, confirm, action)
        return rows

    def pair_before_commit(
        self,
        conn: psycopg.Connection[Any],
        params: Sequence[str | None],
        then: PreparedCall,
        then_params: Sequence[str | None],
    ) -> tuple[list[tuple[Any, ...]], LaterRows, Callable[[], None]]:
        """:meth:`rows_before_commit` for this statement and ``then`` after it: one commit.

        Both go out in one pipeline before one sync, so they run in one implicit
        transaction and share its commit (one flush to disk, not two). ``then`` runs
        only if this statement succeeded; if ``then`` fails, the transaction rolls back
        whole, this statement's writes included. Returns this statement's rows as soon
        as they are here (the server sends them before it runs ``then``), ``then``'s
        rows to read when wanted (:class:`LaterRows`: meanwhile the server runs it) and
        the confirmation, as :meth:`rows_before_commit` does; the confirmation raises
        ``then``'s error too, whether or not its rows were read.

        Raises:
            psycopg.Error: this statement failed (nothing was committed, ``then`` never ran).
            StorageError: ``conn`` is not idle outside a transaction.
        """
        self._require_idle(conn)
        values = _encoded(params)
        then_values = _encoded(then_params)
        for call in (self, then):
            if conn not in call._prepared:
                call._prepare(conn)
        result = self._rows_first(conn, values, (then.name, then_values))
        if _undefined(result):  # deallocated behind our back (both were): prepare, rerun
            _confirmation(conn, failed=True)()
            _forget_session(conn)
            self._prepare(conn)
            then._prepare(conn)
            result = self._rows_first(conn, values, (then.name, then_values))
        pq = import_psycopg().pq
        if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            _confirmation(conn, failed=True)()
            self._check(conn, result)  # raises: an error, or a status no statement here has
        later = LaterRows(then, conn)

        def confirm() -> None:
            later.read()
            if later.error is None:
                _confirmation(conn)()
                return
            _confirmation(conn, failed=True)()
            then._check(conn, later.error)  # raises: the transaction rolled back whole

        return self._rows_of(conn, result), later, confirm

    def pair_deferred(
        self,
        database: PostgresDatabase,
        conn: psycopg.Connection[Any],
        params: Sequence[str | None],
        then: PreparedCall,
        then_params: Sequence[str | None],
        action: str,
    ) -> tuple[list[tuple[Any, ...]], LaterRows]:
        """:meth:`pair_before_commit`; inside ``database.deferring()``, back before the commit.

        As :meth:`rows_deferred` holds its connection; elsewhere the commit is confirmed
        before this returns (``then``'s rows read with it).
        """
        held = database.may_hold()
        rows, later, confirm = self.pair_before_commit(conn, params, then, then_params)
        if held:
            database.hold(conn, confirm, action)
        else:
            confirm()
        return rows, later

    def _rows_of(self, conn: psycopg.Connection[Any], result: Any) -> list[tuple[Any, ...]]:
        if not self._typed:
            return _text_rows(result)
        loader = import_psycopg().adapt.Transformer(conn)
        loader.set_pgresult(result)
        rows: list[tuple[Any, ...]] = loader.load_rows(0, result.ntuples, tuple)
        return rows

    def _rows_first(
        self,
        conn: psycopg.Connection[Any],
        values: list[bytes | None],
        then: tuple[bytes, list[bytes | None]] | None = None,
    ) -> Any:
        """Send the statement, a flush request and a sync; its result once it is here.

        ``then``: the name and values of a prepared statement sent after it, before the
        sync (one implicit transaction); its result is read by :func:`_next_result`.

        Raises:
            psycopg.OperationalError: the pipeline ended with no result for the statement
                (the connection is closed: its state is not one this module knows).
        """
        pgconn = conn.pgconn
        try:
            pgconn.enter_pipeline_mode()
            pgconn.send_query_prepared(self.name, values)
            pgconn.send_flush_request()
            if then is not None:
                pgconn.send_query_prepared(*then)
                pgconn.send_flush_request()
            pgconn.pipeline_sync()
            fileno = pgconn.socket
            while pgconn.flush():
                if _wait(fileno, select.POLLIN | select.POLLOUT) & select.POLLIN:
                    pgconn.consume_input()
        except BaseException:
            conn.close()
            raise
        return _next_result(conn)

    @staticmethod
    def _require_idle(conn: psycopg.Connection[Any]) -> None:
        pq = import_psycopg().pq
        pgconn = conn.pgconn
        if (
            pgconn.transaction_status != pq.TransactionStatus.IDLE
            or pgconn.pipeline_status != pq.PipelineStatus.OFF
        ):
            raise StorageError("a prepared call needs an idle connection outside a transaction")

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        pgconn = conn.pgconn
        with self._lock:
            self._prepared.discard(conn)
        result = self._exchange(conn, lambda: pgconn.send_prepare(self.name, self._sql))
        if result.error_field(import_psycopg().pq.DiagnosticField.SQLSTATE) != (
            _DUPLICATE_STATEMENT
        ):
            self._check(conn, result)
        with self._lock:
            self._prepared.add(conn)

    @staticmethod
    def _check(conn: psycopg.Connection[Any], result: Any) -> None:
        psycopg = import_psycopg()
        if result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
        if result.status not in (
            psycopg.pq.ExecStatus.TUPLES_OK,
            psycopg.pq.ExecStatus.COMMAND_OK,
        ):
            status = psycopg.pq.ExecStatus(result.status).name
            raise psycopg.OperationalError(f"unexpected result status {status}")

    @staticmethod
    def _exchange(conn: psycopg.Connection[Any], send: Any) -> Any:
        """Send one query with ``send()``, wait for its results; the last of them.

        libpq's asynchronous API, as psycopg uses it: flush, then read while busy,
        sleeping on the socket in between. Any exception while waiting (a signal's)
        leaves the session mid-query (and libpq's own errors mean it broke), so the
        connection is closed before the exception propagates and the pool replaces it.
        """
        psycopg = import_psycopg()
        pgconn = conn.pgconn
        try:
            send()
            fileno = pgconn.socket
            while pgconn.flush():  # the rest goes out once the socket takes it
                if _wait(fileno, select.POLLIN | select.POLLOUT) & select.POLLIN:
                    pgconn.consume_input()
            pgconn.consume_input()
            while pgconn.is_busy():
                _wait(fileno, select.POLLIN)
                pgconn.consume_input()
            last = None
            while (result := pgconn.get_result()) is not None:
                last = result
        except BaseException:
            conn.close()
            raise
        if last is None:
            raise psycopg.OperationalError("the server sent no result")
        return last


class LaterRows:
    """The rows of a statement sent second in a pipeline, read when first asked for.

    Meanwhile the server runs it and the caller goes on. Read at the latest by the
    pipeline's confirmation, which needs the connection past this result; the rows (or
    the statement's error) are kept for a later :meth:`rows`.
    """

    __slots__ = ("_call", "_conn", "_read", "_rows", "error")

    def __init__(self, call: PreparedCall, conn: psycopg.Connection[Any]) -> None:
        self._call = call
        self._conn = conn
        self._read = False
        self._rows: list[tuple[Any, ...]] = []
        self.error: Any = None
        """The statement's failed result, once read (its transaction rolled back whole)."""

    def read(self) -> None:
        """Read the statement's result off the connection, once.

        Raises:
            psycopg.OperationalError: the connection broke (it is closed).
        """
        if self._read:
            return
        self._read = True
        result = _next_result(self._conn)
        pq = import_psycopg().pq
        if result.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            self._rows = self._call._rows_of(self._conn, result)
        else:
            self.error = result

    def rows(self) -> list[tuple[Any, ...]]:
        """The statement's rows (as its call gives them).

        Raises:
            psycopg.Error: the statement failed, or the connection broke.
        """
        self.read()
        if self.error is not None:
            self._call._check(self._conn, self.error)
        return self._rows


def _forget_session(conn: psycopg.Connection[Any]) -> None:
    """Forget that any statement here is prepared on ``conn``: it said one was not.

    A session's prepared statements go together (psycopg's ``DEALLOCATE ALL``), so a
    statement found missing means every other is too: each is prepared again before
    it is next sent there, not found missing in its turn (the second of a pair, found
    missing, would have rolled back the first, whose rows were already used).
    """
    for call in list(_CALLS):
        with call._lock:
            call._prepared.discard(conn)


_CALLS: Final[weakref.WeakSet[PreparedCall]] = weakref.WeakSet()
"""Every :class:`PreparedCall` made (see :func:`_forget_session`)."""


def _encoded(params: Sequence[str | None]) -> list[bytes | None]:
    """Text parameters as libpq takes them: UTF-8, ``None`` for ``NULL``."""
    return [None if p is None else p.encode("utf-8") for p in params]


def _text_rows(result: Any) -> list[tuple[str | None, ...]]:
    return [
        tuple(
            None if (value := result.get_value(row, column)) is None else value.decode()
            for column in range(result.nfields)
        )
        for row in range(result.ntuples)
    ]


def _next_result(conn: psycopg.Connection[Any]) -> Any:
    """The pipeline's next result on ``conn`` (its statements' results, in order).

    Raises:
        psycopg.OperationalError: the pipeline reached its sync first (the connection is
            closed: its state is not one this module knows).
    """
    psycopg = import_psycopg()
    pgconn = conn.pgconn
    try:
        fileno = pgconn.socket
        while True:
            pgconn.consume_input()
            while not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:  # between two results of the pipeline
                    continue
                if result.status == psycopg.pq.ExecStatus.PIPELINE_SYNC:
                    raise psycopg.OperationalError("the server sent no result")
                return result
            _wait(fileno, select.POLLIN)
    except BaseException:
        conn.close()
        raise


def _undefined(result: Any) -> bool:
    """Whether ``result`` says the statement is not prepared on this session (it never ran)."""
    pq = import_psycopg().pq
    return bool(
        result.status == pq.ExecStatus.FATAL_ERROR
        and result.error_field(pq.DiagnosticField.SQLSTATE) == _UNDEFINED_STATEMENT
    )


def _confirmation(conn: psycopg.Connection[Any], *, failed: bool = False) -> Callable[[], None]:
    """What reads the rest of a :meth:`PreparedCall.rows_before_commit` exchange.

    The pipeline's remaining results up to its sync: nothing more when the commit went
    through; an error result when the server refused it (a deferred constraint, say), which
    is raised as psycopg's exception for it. ``failed``: the statement's own error was
    read already, and the rest (the sync) is only drained. Either way the connection
    leaves pipeline mode; on any exception it is closed first (its state is unknown).
    """

    def confirm() -> None:
        psycopg = import_psycopg()
        pq = psycopg.pq
        pgconn = conn.pgconn
        refused = None
        try:
            fileno = pgconn.socket
            synced = False
            while not synced:
                pgconn.consume_input()
                while not pgconn.is_busy():
                    result = pgconn.get_result()
                    if result is None:
                        continue
                    if result.status == pq.ExecStatus.PIPELINE_SYNC:
                        synced = True
                        break
                    if result.status == pq.ExecStatus.FATAL_ERROR and refused is None:
                        refused = result
                if not synced:
                    _wait(fileno, select.POLLIN)
            pgconn.exit_pipeline_mode()
        except BaseException:
            conn.close()
            raise
        if refused is not None and not failed:
            raise psycopg.errors.error_from_result(refused, encoding=conn.info.encoding)

    return confirm


def _wait(fileno: int, events: int) -> int:
    """Sleep until the socket is ready for ``events``; the events that are ready.

    ``poll``, not ``select``: a process with more than 1,024 descriptors open would get
    ``ValueError`` from ``select`` for a socket numbered beyond them. A signal's handler
    runs meanwhile (PEP 475 retries the call unless the handler raises).
    """
    poller = select.poll()
    poller.register(fileno, events)
    ready = 0
    for _, happened in poller.poll():
        ready |= happened
    return ready
