"""Rows made on one thread and stepped on another: same rows, same order, every error raised."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aifr.storage.sqlite.pipelined import CHUNK_ROWS, PipelinedInsert, write_pipelined

INSERT = PipelinedInsert(
    "INSERT INTO items (key, label, size)",
    3,
    "ON CONFLICT(key) DO UPDATE SET seen = items.seen + 1",
)


def _connect(tmp_path: Path, name: str = "items.db") -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / name, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE items (seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, "
        "label TEXT, size INTEGER NOT NULL, seen INTEGER NOT NULL DEFAULT 1)"
    )
    return conn


def _rows(count: int) -> Iterator[tuple[object, ...]]:
    for i in range(count):
        yield (f"k{i % 700}", None if i % 5 == 0 else f"label {i} é\u2603", i)


def _written(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute("SELECT seq, key, label, size, seen FROM items ORDER BY seq").fetchall()


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "aifr-sqlite-writer"]


@pytest.mark.parametrize("count", [0, 1, CHUNK_ROWS - 1, CHUNK_ROWS, CHUNK_ROWS + 1, 1000])
def test_the_rows_and_their_order_are_those_of_one_executemany(tmp_path: Path, count: int) -> None:
    pipelined = _connect(tmp_path, "pipelined.db")
    plain = _connect(tmp_path, "plain.db")
    pipelined.execute("BEGIN IMMEDIATE")
    write_pipelined(pipelined, INSERT, _rows(count))
    pipelined.execute("COMMIT")
    plain.executemany(INSERT.single, list(_rows(count)))

    assert _written(pipelined) == _written(plain)
    assert len(_written(pipelined)) == min(count, 700)  # keys repeat after 700: upserted
    assert not _writer_threads()


def test_a_failing_row_is_raised_in_the_caller_and_its_transaction_rolls_back(
    tmp_path: Path,
) -> None:
    conn = _connect(tmp_path)

    def rows() -> Iterator[tuple[object, ...]]:
        yield from ((f"k{i}", "x", i) for i in range(300))
        yield ("bad", "x", None)  # size is NOT NULL: the writer's statement fails
        yield from ((f"k{i}", "x", i) for i in range(300, 2000))

    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
        write_pipelined(conn, INSERT, rows())
    conn.execute("ROLLBACK")
    assert _written(conn) == []
    assert not _writer_threads()


def test_a_row_source_that_raises_stops_the_writer_and_reaches_the_caller(tmp_path: Path) -> None:
    conn = _connect(tmp_path)
    read = 0

    def rows() -> Iterator[tuple[object, ...]]:
        nonlocal read
        for i in range(5000):
            if i == 900:
                raise OSError("the scanner output could not be read")
            read += 1
            yield (f"k{i}", "x", i)

    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(OSError, match="could not be read"):
        write_pipelined(conn, INSERT, rows())
    assert not _writer_threads()  # stopped before the caller sees the error
    conn.execute("ROLLBACK")
    assert read == 900
    assert _written(conn) == []


def test_a_value_sqlite_cannot_hold_is_raised_as_executemany_raises_it(tmp_path: Path) -> None:
    conn = _connect(tmp_path)
    rows = [(f"k{i}", "x", i) for i in range(CHUNK_ROWS * 2)]
    rows[CHUNK_ROWS + 3] = ("huge", "x", 2**70)
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(OverflowError):
        write_pipelined(conn, INSERT, rows)
    conn.execute("ROLLBACK")
    with pytest.raises(OverflowError):
        conn.executemany(INSERT.single, rows)
    assert not _writer_threads()


def test_the_chunk_statement_holds_chunk_rows_rows() -> None:
    assert INSERT.single == (
        "INSERT INTO items (key, label, size) VALUES (?, ?, ?) "
        "ON CONFLICT(key) DO UPDATE SET seen = items.seen + 1"
    )
    assert INSERT.chunk.count("(?, ?, ?)") == CHUNK_ROWS
    assert CHUNK_ROWS * 17 <= 32_766  # the findings upsert's 17 columns fit SQLite's limit
