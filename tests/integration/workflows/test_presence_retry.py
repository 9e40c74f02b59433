"""A worker's presence tries again to announce itself while its database fails.

The failure is real: another connection holds the SQLite file's exclusive lock, and the
registry's database gives up on it after 50 ms ("database is locked"), as a worker's
writes fail while its database is away.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aifr.errors import StorageError
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.workers import SqliteWorkerRegistry
from aifr.workflows import presence as presence_module
from aifr.workflows.ports import WorkerInfo
from aifr.workflows.presence import Presence

WORKER = WorkerInfo("h1:10:aa", "h1", 10, 1, "0.1.0", 1000.0, 1000.0)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[SqliteWorkerRegistry]:
    database = SqliteDatabase(tmp_path / "aifr.db", synchronous="NORMAL", busy_timeout_ms=50)
    registry = SqliteWorkerRegistry(database)
    registry.workers(now=0.0)  # its table made before the file is locked
    yield registry
    database.close()


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """The database file's exclusive lock, held by another connection until released."""
    blocker = sqlite3.connect(tmp_path / "aifr.db", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    yield blocker
    if blocker.in_transaction:
        blocker.execute("ROLLBACK")
    blocker.close()


def test_a_presence_announces_once_the_database_takes_writes_again(
    registry: SqliteWorkerRegistry, locked: sqlite3.Connection
) -> None:
    release = threading.Timer(0.5, locked.execute, args=("ROLLBACK",))
    release.start()
    started = time.monotonic()
    with Presence(registry, WORKER, every_s=60.0, retry_for_s=30.0):
        waited = time.monotonic() - started
        [announced] = registry.workers(now=0.0)
    release.join()

    assert waited >= 0.5  # it was refused until the lock went away
    assert announced.id == WORKER.id and announced.started_at == WORKER.started_at
    assert announced.seen_at > WORKER.seen_at  # seen when it finally got through
    assert registry.workers(now=0.0) == []  # and it left


def test_a_presence_gives_up_after_its_time_with_the_database_s_error(
    registry: SqliteWorkerRegistry, locked: sqlite3.Connection
) -> None:
    started = time.monotonic()
    with (
        pytest.raises(StorageError, match="database is locked"),
        Presence(registry, WORKER, every_s=60.0, retry_for_s=0.4),
    ):
        pytest.fail("entered without announcing")

    assert 0.4 <= time.monotonic() - started < 5.0


def test_a_presence_without_time_to_retry_fails_at_the_first_refusal(
    registry: SqliteWorkerRegistry, locked: sqlite3.Connection
) -> None:
    started = time.monotonic()
    with pytest.raises(StorageError), Presence(registry, WORKER, every_s=60.0):
        pytest.fail("entered without announcing")

    assert time.monotonic() - started < 0.4  # one attempt of 50 ms, no pause


def test_a_cancelled_presence_stops_retrying_at_once(
    registry: SqliteWorkerRegistry, locked: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(presence_module, "ANNOUNCE_FIRST_PAUSE_S", 30.0)  # a long pause
    presence = Presence(registry, WORKER, every_s=60.0, retry_for_s=60.0)
    threading.Timer(0.3, presence.cancel).start()
    started = time.monotonic()
    with pytest.raises(StorageError), presence:
        pytest.fail("entered without announcing")

    assert time.monotonic() - started < 3.0  # within its first pause of 15 s or more
    assert registry.workers(now=0.0) == []
