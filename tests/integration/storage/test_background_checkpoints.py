"""WAL checkpoints on a background thread: the WAL stays bounded and nothing is lost."""

from __future__ import annotations

import io
import json
import os
import sqlite3
from pathlib import Path

import pytest

from aifr.errors import StorageError
from aifr.findings.importer import import_findings
from aifr.findings.ports import FindingFilter
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.checkpoints import BackgroundCheckpoints
from aifr.storage.sqlite.findings import SqliteFindingStore, SqliteResourceRegistry

PAGE = 4096
ROW = "x" * 3000  # about one page per row


def _database(tmp_path: Path) -> tuple[SqliteDatabase, sqlite3.Connection]:
    database = SqliteDatabase(tmp_path / "bulk.db", synchronous="NORMAL")
    conn = database.connect()
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # as an import batch: its commits never copy
    conn.execute("CREATE TABLE bulk (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    return database, conn


def _batch(conn: sqlite3.Connection, start: int, rows: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO bulk (id, body) VALUES (?, ?)", ((start + i, ROW) for i in range(rows))
    )
    conn.execute("COMMIT")


def _wal_bytes(database: SqliteDatabase) -> int:
    wal = Path(f"{database.path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def _fully_copied(database: SqliteDatabase) -> bool:
    probe = sqlite3.connect(database.path)
    try:
        _busy, frames, copied = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        probe.close()
    return bool(frames == copied)


def test_the_wal_stays_bounded_while_batches_go_on(tmp_path: Path) -> None:
    database, conn = _database(tmp_path)
    checkpoints = BackgroundCheckpoints(database, batches=4)
    largest = 0
    for batch in range(40):  # about 40 x 100 pages written, ten times the bound
        checkpoints.bound()
        _batch(conn, batch * 100, 100)
        checkpoints.request()
        largest = max(largest, _wal_bytes(database))
    checkpoints.drain()

    # Without bound() nothing would ever start the WAL over (the background copy always
    # runs behind the writer): it would hold all 4,000 pages.
    assert largest < 5 * 110 * (PAGE + 24)
    assert _fully_copied(database)
    reader = sqlite3.connect(database.path)
    assert reader.execute("SELECT COUNT(*) FROM bulk").fetchone()[0] == 4000
    assert reader.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    reader.close()
    database.close()


def test_without_bound_the_background_copy_alone_lets_the_wal_grow(tmp_path: Path) -> None:
    """The reason for bound(): a writer that never waits keeps the WAL from starting over."""
    database, conn = _database(tmp_path)
    checkpoints = BackgroundCheckpoints(database, batches=10**9)  # never waits
    for batch in range(20):
        checkpoints.bound()
        _batch(conn, batch * 100, 100)
        checkpoints.request()
    checkpoints.drain()
    bounded, conn2 = _database(tmp_path / "bounded")
    small = BackgroundCheckpoints(bounded, batches=2)
    for batch in range(20):
        small.bound()
        _batch(conn2, batch * 100, 100)
        small.request()
    small.drain()
    assert _wal_bytes(bounded) < _wal_bytes(database)
    database.close()
    bounded.close()


def test_drain_copies_every_committed_frame_and_is_free_when_nothing_was_asked(
    tmp_path: Path,
) -> None:
    database, conn = _database(tmp_path)
    checkpoints = BackgroundCheckpoints(database)
    checkpoints.drain()  # nothing asked: no thread, no connection
    assert checkpoints._conn is None  # the lazily opened connection
    _batch(conn, 0, 50)
    checkpoints.request()
    _batch(conn, 50, 50)  # committed while the background copy may still run
    checkpoints.drain()
    assert _fully_copied(database)
    database.close()


def test_a_failed_background_checkpoint_is_reported_by_the_next_drain(tmp_path: Path) -> None:
    database, conn = _database(tmp_path)
    checkpoints = BackgroundCheckpoints(database)
    _batch(conn, 0, 10)
    checkpoints.request()
    checkpoints.drain()
    assert checkpoints._conn is not None  # opened by the first checkpoint
    checkpoints._conn.close()  # the next checkpoint fails in the background
    _batch(conn, 10, 10)
    checkpoints.request()
    with pytest.raises(StorageError, match="checkpointing the WAL"):
        checkpoints.drain()
    database.close()


def test_an_import_ends_with_its_wal_copied_back_and_every_finding_readable(
    tmp_path: Path,
) -> None:
    database = SqliteDatabase(tmp_path / "aifr.db")
    store = SqliteFindingStore(database)
    lines = "".join(
        json.dumps(
            {
                "template-id": f"tmpl-{i % 13}",
                "info": {"name": "Check", "severity": "medium"},
                "type": "http",
                "host": f"h{i}.example.test",
                "matched-at": f"https://h{i}.example.test/{'p' * 200}",
            }
        )
        + "\n"
        for i in range(3000)
    )
    summary = import_findings(
        store,
        SqliteResourceRegistry(store),
        io.BytesIO(lines.encode()),
        project_id="acme",
        run_id="run-1",
        batch_size=250,  # 12 batches, each committed while the last one is copied back
    )
    assert (summary.imported, summary.duplicates) == (3000, 0)
    assert _fully_copied(database)
    page = store.list_findings(FindingFilter(project_id="acme"), limit=5000)
    assert len(page.findings) == 3000
    store.close()
    assert os.path.exists(database.path)
    database.close()
