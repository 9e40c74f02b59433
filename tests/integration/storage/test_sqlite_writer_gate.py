"""The SQLite writer gate: aifr's writers queue for the write lock across processes.

The gate (``<database>-lock``, taken before ``BEGIN IMMEDIATE`` and released after the
commit) is held here on its own by another process or thread, without SQLite's lock, so
a writer that did not go through it would write at once: each writer must wait for
its holder instead. A holder killed with -9 releases it; a holder that does not let go
(a stopped worker) makes the writer give up after the busy timeout, naming the file;
a busy timeout of 0 means never wait.
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
if sys.argv[3] == "gate":  # the gate alone: SQLite's lock stays free
    with database.gate:
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))
else:
    with database.transaction() as conn:
        conn.execute("INSERT INTO notes (body) VALUES ('holder')")
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""


def _database(path: Path, busy_timeout_ms: int = 30_000) -> SqliteDatabase:
    database = SqliteDatabase(path, busy_timeout_ms=busy_timeout_ms)
    database.migrate("notes", [NOTES])
    return database


@contextmanager
def _holding(path: Path, seconds: float, what: str = "gate") -> Iterator[subprocess.Popen[str]]:
    """Another process holding the gate (``what="gate"``) or a write transaction."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds), what],
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


def test_a_writer_waits_for_another_process_holding_the_gate(tmp_path: Path) -> None:
    path = tmp_path / "aifr.db"
    database = _database(path)
    with _holding(path, 0.4) as holder:
        started = time.monotonic()
        with database.transaction() as conn:  # SQLite's lock is free: only the gate waits
            conn.execute("INSERT INTO notes (body) VALUES ('waiter')")
        waited = time.monotonic() - started
        assert holder.wait(timeout=30) == 0
    assert waited > 0.3
    assert _bodies(database) == ["waiter"]
    database.close()


def test_a_writer_follows_another_processs_transaction(tmp_path: Path) -> None:
    path = tmp_path / "aifr.db"
    database = _database(path)
    with _holding(path, 0.3, "transaction") as holder:
        with database.transaction() as conn:
            conn.execute("INSERT INTO notes (body) VALUES ('waiter')")
        assert holder.wait(timeout=30) == 0
    assert _bodies(database) == ["holder", "waiter"]
    database.close()


def test_an_audit_append_waits_for_the_gate_too(tmp_path: Path) -> None:
    path = tmp_path / "aifr.db"
    database = _database(path)
    ledger = AuditLedger(SqliteAuditStore(database))
    ledger.append(AuditEvent(kind="client", principal="agent"))
    with _holding(path, 0.4) as holder:
        started = time.monotonic()
        ledger.append(AuditEvent(kind="client", principal="agent"))  # the lone-append path
        waited = time.monotonic() - started
        assert holder.wait(timeout=30) == 0
    assert waited > 0.3
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
    with _holding(path, 300, "transaction") as holder:
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
    waited: list[float] = []

    def hold() -> None:
        with database.gate:  # the gate alone, as a transaction's first step holds it
            inside.set()
            time.sleep(0.3)
        with database.transaction() as conn:
            conn.execute("INSERT INTO notes (body) VALUES ('first')")

    def follow() -> None:
        inside.wait(10)
        started = time.monotonic()
        try:
            with database.transaction() as conn:  # this thread's own connection
                conn.execute("INSERT INTO notes (body) VALUES ('second')")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        waited.append(time.monotonic() - started)

    threads = [threading.Thread(target=hold), threading.Thread(target=follow)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert waited[0] > 0.2
    assert sorted(_bodies(database)) == ["first", "second"]
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


def test_a_writer_gives_up_after_the_busy_timeout_when_the_holder_does_not_let_go(
    tmp_path: Path,
) -> None:
    path = tmp_path / "aifr.db"
    database = _database(path, busy_timeout_ms=300)
    with _holding(path, 30, "transaction") as holder:
        holder.send_signal(signal.SIGSTOP)  # as Ctrl-Z on a worker mid-commit
        started = time.monotonic()
        with pytest.raises(StorageError) as caught, database.transaction():
            pass
        waited = time.monotonic() - started
        holder.send_signal(signal.SIGCONT)
    assert 0.25 < waited < 5
    assert str(path) in caught.value.message
    assert "0.3s" in caught.value.message
    assert _bodies(database) == []  # neither the holder's row nor anything of this writer
    database.close()


def test_writes_go_on_where_the_lock_file_cannot_be_made(tmp_path: Path) -> None:
    path = tmp_path / "aifr.db"
    (tmp_path / "aifr.db-lock").mkdir()  # the gate's file cannot be opened: no gate
    database = _database(path, busy_timeout_ms=1000)
    with database.transaction() as conn:
        conn.execute("INSERT INTO notes (body) VALUES ('ungated')")
    assert _bodies(database) == ["ungated"]
    database.close()
