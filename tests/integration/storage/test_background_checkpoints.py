"""WAL checkpoints on a background thread: the WAL stays bounded and nothing is lost."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aifr.errors import StorageError
from aifr.findings import ParsedFinding, Project, Run, Severity
from aifr.findings.importer import import_findings
from aifr.findings.ports import FindingFilter
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.checkpoints import BackgroundCheckpoints
from aifr.storage.sqlite.findings import SqliteFindingStore, SqliteResourceRegistry

PAGE = 4096
ROW = "x" * 3000  # about one page per row
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


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


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "aifr-wal-checkpoint"]


def test_closing_the_database_waits_for_a_running_checkpoint(tmp_path: Path) -> None:
    """A database closed while its checkpoint runs must not pull the connection from under it.

    The checkpoint's connection is one of the database's, which ``close()`` closes: closed
    under a running ``wal_checkpoint`` it crashed the process (a segfault in CI, when a
    test fixture closed the database after writing findings without closing the store).
    """
    database, conn = _database(tmp_path)
    checkpoints = BackgroundCheckpoints(database)
    for round_ in range(5):
        _batch(conn, round_ * 2_000, 2_000)  # about 24 MB of WAL: the checkpoint takes a while
        checkpoints.request()
        database.close()  # at once, while the checkpoint copies
        assert not _checkpoint_threads()
        conn = database.connect()  # a closed database opens connections again on demand
    checkpoints.drain()  # raises a background checkpoint's failure: none may have failed
    assert conn.execute("SELECT count(*) FROM bulk").fetchone()[0] == 10_000
    database.close()


def test_a_finding_store_whose_database_is_closed_first_leaves_no_checkpoint_running(
    tmp_path: Path,
) -> None:
    """The findings contract tests' order: findings saved, then the database closed."""
    database = SqliteDatabase(tmp_path / "aifr.db")
    store = SqliteFindingStore(database)
    store.save_project(Project(id="acme", name="acme", created_at=T0))
    store.save_run(Run(id="r1", project_id="acme", scanner="nuclei", started_at=T0))
    for round_ in range(3):
        batch = [
            (
                ParsedFinding(
                    line=n,
                    scanner="nuclei",
                    scanner_generation="C",
                    rule_id=f"rule-{n}",
                    title=f"Finding {n} {ROW}",
                    severity=Severity.HIGH,
                    fingerprint=hashlib.sha256(f"{round_}-{n}".encode()).hexdigest(),
                    host="app.example.test",
                ),
                None,
            )
            for n in range(3_000)
        ]
        store.save_parsed(batch, project_id="acme", run_id="r1", seen_at=T0)  # asks for one
        database.close()  # the store is not closed: only its database is
        assert not _checkpoint_threads()
    page = store.list_findings(FindingFilter(project_id="acme"), limit=10_000)
    assert len(page.findings) == 9_000
    store.close()  # raises a background checkpoint's failure: none may have failed
    database.close()
