"""The SQLite writer gate: aifr's writers queue for the write lock instead of sleeping.

Every writer here runs with a SQLite busy timeout of 1 ms, so a writer that met
SQLite's lock held by another would fail with "database is locked" almost at once. The
gate (``<database>-lock``, taken before ``BEGIN IMMEDIATE``) makes it wait for the
holder instead, whether the holder is another process or another thread; a holder
killed with -9 releases it; a busy timeout of 0 still means "never wait".
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from aifr.audit import AuditEvent, AuditLedger
from aifr.errors import StorageError
from aifr.storage.sqlite import Migration, SqliteDatabase
from aifr.storage.sqlite.audit import SqliteAuditStore

NOTES = Migration(1, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);\n")

HOLDER = """
import sys, time
from aifr.storage.sqlite import SqliteDatabase
database = SqliteDatabase(sys.argv[1])
with database.transaction() as conn:
    conn.execute("INSERT INTO notes (body) VALUES ('holder')")
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
print("committed", flush=True)
"""


def _database(path: Path, busy_timeout_ms: int = 1) -> SqliteDatabase:
    database = SqliteDatabase(path, busy_timeout_ms=busy_timeout_ms)
    database.migrate("notes", [NOTES])
    return database


@contextmanager
def _holding(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process holding a write transaction (and the gate) for ``seconds``."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "holding"
            yield holder
        finally:
            holder.kill()


def _bodies(database: SqliteDatabase) -> list[str]:
    return [row[0] for row in database.connect().execute("SELECT body FROM notes ORDER BY id")]


def test_a_writer_waits_for_another_processs_transaction_instead_of_failing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "aifr.db"
    database = _database(path)
    with _holding(path, 0.4) as holder:
        started = time.monotonic()
        with database.transaction() as conn:  # SQLite alone: "database is locked" in 1 ms
            conn.execute("INSERT INTO notes (body) VALUES ('waiter')")
        waited = time.monotonic() - started
        assert holder.wait(timeout=30) == 0
    assert waited > 0.2
    assert _bodies(database) == ["holder", "waiter"]
    database.close()


def test_an_audit_append_waits_for_the_gate_too(tmp_path: Path) -> None:
    path = tmp_path / "aifr.db"
    database = _database(path)
    ledger = AuditLedger(SqliteAuditStore(database))
    ledger.append(AuditEvent(kind="client", principal="agent"))
    with _holding(path, 0.3) as holder:
        ledger.append(AuditEvent(kind="client", principal="agent"))  # the lone-append path
        assert holder.wait(timeout=30) == 0
    assert ledger.verify().ok
    assert ledger.head().seq == 2
    database.close()


def test_a_holder_killed_with_minus_9_releases_the_gate(tmp_path: Path) -> None:
    path = tmp_path / "aifr.db"
    database = _database(path)
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with database.transaction() as conn:
                conn.execute("INSERT INTO notes (body) VALUES ('after the kill')")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        done.set()

    waiter = threading.Thread(target=write)
    with _holding(path, 300) as holder:
        try:
            waiter.start()
            assert not done.wait(0.3), "the writer did not wait for the holder"
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=30)
            assert done.wait(10), "the gate was not released with the killed holder"
        finally:
            waiter.join(10)
    assert errors == []
    assert _bodies(database) == ["after the kill"]  # the holder's insert died with it
    database.close()


def test_threads_of_one_process_queue_at_the_gate(tmp_path: Path) -> None:
    database = _database(tmp_path / "aifr.db")
    inside = threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        with database.transaction() as conn:  # this thread's own connection
            conn.execute("INSERT INTO notes (body) VALUES ('first')")
            inside.set()
            time.sleep(0.3)

    def follow() -> None:
        inside.wait(10)
        try:
            with database.transaction() as conn:  # another connection, busy timeout 1 ms
                conn.execute("INSERT INTO notes (body) VALUES ('second')")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=hold), threading.Thread(target=follow)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert _bodies(database) == ["first", "second"]
    database.close()


def test_a_busy_timeout_of_zero_fails_at_once_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "aifr.db"
    database = _database(path, busy_timeout_ms=0)
    with _holding(path, 30):
        started = time.monotonic()
        with pytest.raises(StorageError) as caught, database.transaction():
            pass
        assert time.monotonic() - started < 1
    assert str(path) in caught.value.message
    assert "another process" in caught.value.message
    database.close()


def test_writes_go_on_where_the_lock_file_cannot_be_made(tmp_path: Path) -> None:
    path = tmp_path / "aifr.db"
    (tmp_path / "aifr.db-lock").mkdir()  # the gate's file cannot be opened: no gate
    database = _database(path, busy_timeout_ms=1000)
    with database.transaction() as conn:
        conn.execute("INSERT INTO notes (body) VALUES ('ungated')")
    assert _bodies(database) == ["ungated"]
    database.close()
