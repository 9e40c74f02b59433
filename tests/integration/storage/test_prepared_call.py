"""``PreparedCall``: one statement through libpq, with psycopg's errors and a safe wait.

The step's hot statement skips psycopg's cursor machinery; these tests check, on a real
server, that what it gives up nothing of what callers rely on: rows and NULLs, a
statement deallocated behind its back (psycopg's ``DEALLOCATE ALL``), the exception
class psycopg itself would raise for a SQLSTATE (``translate_pg_errors`` reads it), a
connection in a transaction refused, a wait cut short by a signal leaving no
half-read session in the pool, and a socket numbered beyond ``select``'s reach.
"""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

import psycopg
import pytest

from aifr.errors import ErrorCode, StorageError, WorkflowError
from aifr.storage.postgres.database import PostgresDatabase, translate_pg_errors
from aifr.storage.postgres.prepared_call import PreparedCall

pytestmark = pytest.mark.pg

ECHO = PreparedCall("aifr_test_echo", "SELECT $1::integer + 1, $2::text, $3::text")


@pytest.fixture
def database(pg_schema: tuple[str, str]) -> Iterator[PostgresDatabase]:
    dsn, schema = pg_schema
    database = PostgresDatabase(dsn, schema=schema, max_size=2)
    yield database
    database.close()


def test_rows_come_back_as_text_with_nulls_as_none(database: PostgresDatabase) -> None:
    with database.connection() as conn:
        assert ECHO.rows(conn, ("41", "naïve — 東京 🚀", None)) == [("42", "naïve — 東京 🚀", None)]
        assert ECHO.rows(conn, ("1", "", "x")) == [("2", "", "x")]  # prepared once, reused


def test_a_statement_deallocated_behind_its_back_is_prepared_again(
    database: PostgresDatabase,
) -> None:
    with database.connection() as conn:
        assert ECHO.rows(conn, ("1", "a", "b")) == [("2", "a", "b")]
        conn.execute("DEALLOCATE ALL")  # what psycopg sends after a ROLLBACK it saw
        assert ECHO.rows(conn, ("2", "a", "b")) == [("3", "a", "b")]
        conn.execute("DEALLOCATE aifr_test_echo")
        assert ECHO.rows(conn, ("3", "a", "b")) == [("4", "a", "b")]


def test_a_server_error_is_the_class_psycopg_raises_and_the_session_stays_usable(
    database: PostgresDatabase,
) -> None:
    with database.connection() as conn:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as caught:
            ECHO.rows(conn, ("not a number", "a", "b"))
        assert caught.value.sqlstate == "22P02"
        assert "not a number" in str(caught.value)
        assert ECHO.rows(conn, ("5", "a", "b")) == [("6", "a", "b")]
        assert conn.execute("SELECT 1").fetchone() == (1,)  # psycopg's side still in step


def test_a_refusal_raised_on_the_server_reads_as_a_lost_lease(database: PostgresDatabase) -> None:
    refuse = PreparedCall(
        "aifr_test_refuse",
        "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'AF001', MESSAGE = 'late', "
        "DETAIL = 'run-1'; END $$",
    )
    with database.connection() as conn:
        with pytest.raises(WorkflowError) as caught, translate_pg_errors("completing a step"):
            refuse.rows(conn, ())
    assert caught.value.code is ErrorCode.WORKFLOW_LEASE_LOST
    assert caught.value.message == "late"


def test_a_connection_inside_a_transaction_is_refused(database: PostgresDatabase) -> None:
    with database.connection() as conn:
        conn.execute("BEGIN")
        with pytest.raises(StorageError, match="idle connection"):
            ECHO.rows(conn, ("1", "a", "b"))
        conn.execute("ROLLBACK")


class Interrupted(Exception):
    pass


def test_a_wait_cut_short_by_a_signal_closes_the_connection(database: PostgresDatabase) -> None:
    assert threading.current_thread() is threading.main_thread()
    sleep = PreparedCall("aifr_test_sleep", "SELECT pg_sleep($1::double precision)")

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with database.connection() as conn:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            started = time.monotonic()
            with pytest.raises(Interrupted):
                sleep.rows(conn, ("5",))
            assert time.monotonic() - started < 4  # the signal was handled while waiting
            assert conn.closed  # mid-query: never handed back to the pool as it is
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    with database.connection() as conn:  # the pool replaced it
        assert sleep.rows(conn, ("0",)) == [("",)]


def test_a_socket_numbered_beyond_1024_is_waited_on(pg_schema: tuple[str, str]) -> None:
    # select() refuses descriptors from FD_SETSIZE (1024) on; a busy worker can hold that
    # many files and sockets, so the wait must not depend on the socket's number.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard limit on open files is {hard}: no descriptor beyond 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    dsn, schema = pg_schema
    database = PostgresDatabase(dsn, schema=schema, max_size=1)
    try:
        with database.connection() as conn:
            assert conn.pgconn.socket > 1024
            assert ECHO.rows(conn, ("9", "a", None)) == [("10", "a", None)]
    finally:
        database.close()
        for fd in spare:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
