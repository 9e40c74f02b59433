"""One named prepared statement sent through libpq directly: the step's hot statement.

A lone workflow step is one statement (``aifr_step_done``), so whatever the client pays
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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from aifr.errors import StorageError
from aifr.storage.postgres.database import import_psycopg

if TYPE_CHECKING:
    import psycopg

__all__ = ["PreparedCall"]

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
    """

    def __init__(self, name: str, sql: str) -> None:
        self.name = name.encode("ascii")
        self._sql = sql.encode("utf-8")
        self._prepared: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        self._lock = threading.Lock()

    def rows(
        self, conn: psycopg.Connection[Any], params: Sequence[str | None]
    ) -> list[tuple[str | None, ...]]:
        """Run the statement with ``params`` (text, ``None`` for NULL); its rows, as text.

        Raises:
            psycopg.Error: the statement failed (the class psycopg raises for its SQLSTATE),
                or the connection broke; a wait interrupted (a signal's exception) closes
                the connection, whose state is then unknown, and re-raises.
            StorageError: ``conn`` is not idle outside a transaction.
        """
        pq = import_psycopg().pq
        pgconn = conn.pgconn
        if (
            pgconn.transaction_status != pq.TransactionStatus.IDLE
            or pgconn.pipeline_status != pq.PipelineStatus.OFF
        ):
            raise StorageError("a prepared call needs an idle connection outside a transaction")
        values = [None if p is None else p.encode("utf-8") for p in params]
        if conn not in self._prepared:
            self._prepare(conn)
        result = self._exchange(conn, lambda: pgconn.send_query_prepared(self.name, values))
        if (
            result.status == pq.ExecStatus.FATAL_ERROR
            and result.error_field(pq.DiagnosticField.SQLSTATE) == _UNDEFINED_STATEMENT
        ):  # deallocated behind our back: prepare it again, then run it (it never ran)
            self._prepare(conn)
            result = self._exchange(conn, lambda: pgconn.send_query_prepared(self.name, values))
        self._check(conn, result)
        return [
            tuple(
                None if (value := result.get_value(row, column)) is None else value.decode()
                for column in range(result.nfields)
            )
            for row in range(result.ntuples)
        ]

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
