"""The shared SQLite state database: pragmas, transactions, per-component migrations."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from aifr.errors import ErrorCode, StorageError
from aifr.storage.sqlite import Migration, SqliteDatabase

NOTES_V1 = Migration(1, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);\n")
NOTES_V2 = Migration(
    2, "ALTER TABLE notes ADD COLUMN author TEXT;\nCREATE INDEX notes_author ON notes(author);\n"
)


def test_connections_use_wal_and_the_requested_synchronous_level(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "state" / "aifr.db", synchronous="NORMAL")
    conn = db.connect()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.connect() is conn
    db.close()


def test_each_thread_gets_its_own_connection(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "aifr.db")
    seen: list[object] = []
    worker = threading.Thread(target=lambda: seen.append(db.connect()))
    worker.start()
    worker.join(5)
    assert seen and seen[0] is not db.connect()
    db.close()


def test_migrations_apply_in_order_once_per_component(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "aifr.db")
    assert db.migrate("notes", [NOTES_V1]) == 1
    assert db.migrate("notes", [NOTES_V2, NOTES_V1]) == 2
    assert db.migrate("notes", [NOTES_V1, NOTES_V2]) == 2
    assert db.migrate("other", [Migration(1, "CREATE TABLE other (x INTEGER);\n")]) == 1
    with db.transaction() as conn:
        conn.execute("INSERT INTO notes(body, author) VALUES ('hi', 'ada')")
    assert db.connect().execute("SELECT author FROM notes").fetchone()[0] == "ada"
    db.close()


def test_a_failing_migration_keeps_nothing_of_itself(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "aifr.db")
    db.migrate("notes", [NOTES_V1])
    broken = Migration(2, "ALTER TABLE notes ADD COLUMN author TEXT;\nTHIS IS NOT SQL;\n")
    with pytest.raises(StorageError) as caught:
        db.migrate("notes", [NOTES_V1, broken])
    assert "notes #2" in caught.value.message
    columns = [row[1] for row in db.connect().execute("PRAGMA table_info(notes)")]
    assert columns == ["id", "body"]
    assert db.migrate("notes", [NOTES_V1]) == 1
    db.close()


def test_a_newer_schema_than_the_code_knows_is_refused(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "aifr.db")
    db.migrate("notes", [NOTES_V1, NOTES_V2])
    with pytest.raises(StorageError) as caught:
        db.migrate("notes", [NOTES_V1])
    assert caught.value.code is ErrorCode.STORAGE_SCHEMA_MISMATCH
    db.close()


def test_a_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "aifr.db")
    db.migrate("notes", [NOTES_V1])
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute("INSERT INTO notes(body) VALUES ('lost')")
        raise RuntimeError("boom")
    assert db.connect().execute("SELECT count(*) FROM notes").fetchone()[0] == 0
    db.close()


def test_an_unopenable_path_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError):
        SqliteDatabase(blocker / "aifr.db").connect()


def test_a_corrupted_file_is_a_storage_error_naming_it_not_a_raw_sqlite_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "aifr.db"
    db = SqliteDatabase(path)
    db.migrate("notes", [NOTES_V1])
    db.connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    with path.open("r+b") as handle:  # the page after the schema: schema_versions' rows
        handle.seek(4096)
        handle.write(b"\xff" * 4096)
    reopened = SqliteDatabase(path)
    with pytest.raises(StorageError) as caught:
        reopened.migrate("notes", [NOTES_V1])
    assert caught.value.code is ErrorCode.STORAGE_FAILED
    assert str(path) in caught.value.message
    reopened.close()


def test_an_up_to_date_file_opens_while_another_connection_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "aifr.db"
    SqliteDatabase(path).migrate("notes", [NOTES_V1])
    writer = SqliteDatabase(path).new_connection()
    writer.execute("BEGIN IMMEDIATE")
    reader = SqliteDatabase(path, busy_timeout_ms=50)
    try:
        assert reader.migrate("notes", [NOTES_V1]) == 1
        assert reader.connect().execute("SELECT count(*) FROM notes").fetchone()[0] == 0
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        reader.close()
