"""``SqliteAuditStore``: the audit chain, its checkpoints and shipping cursors in SQLite.

Records live in ``audit_records`` keyed by ``seq`` (the rowid, so seq order is the
physical order and ``MAX(seq)`` is one B-tree step). Group commit writes through one
dedicated connection, used by one leader at a time; ``append_in`` writes through the
caller's connection inside the caller's transaction and reads the head after
``BEGIN IMMEDIATE`` holds the write lock, so every writer in every process extends the
same chain.

Group commit skips that head read while it was the last writer: it remembers the head of
its own last commit and builds on it optimistically. ``seq`` is the primary key, so if
anyone else appended meanwhile (``append_in``, another ledger, another process) the
first insert collides on ``seq`` and the batch is rebuilt on the head read under the
lock. Only committed records of its own are remembered, never ``append_in``'s, whose
transaction the caller may still roll back.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from typing import Final

from aifr.audit import AuditLedger, AuditRecord, ChainBuilder, ChainHead, Checkpoint
from aifr.audit.record import GENESIS_HASH, seq_of_record_id, utc_timestamp
from aifr.errors import AuditError, StorageError
from aifr.storage.audit_rows import (
    AUDIT_COLUMNS,
    audit_row,
    page_records,
    record_from_row,
    scan_query,
)
from aifr.storage.sqlite.database import Migration, SqliteDatabase, translate_sqlite_errors

__all__ = ["AUDIT_MIGRATIONS", "SqliteAuditStore", "open_sqlite_ledger"]

AUDIT_MIGRATIONS = [
    Migration(
        1,
        """
        CREATE TABLE audit_records (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL,
            ts TEXT NOT NULL,
            kind TEXT NOT NULL,
            principal TEXT NOT NULL,
            capability_id TEXT,
            capability_fingerprint TEXT,
            decision TEXT,
            rule_id TEXT,
            inputs_digest TEXT,
            outcome TEXT,
            trace_id TEXT,
            request_id TEXT,
            run_id TEXT,
            details TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE TABLE audit_checkpoints (
            seq INTEGER NOT NULL,
            hash TEXT NOT NULL,
            ts TEXT NOT NULL,
            public_key TEXT NOT NULL,
            signature TEXT NOT NULL,
            PRIMARY KEY (seq, public_key)
        );
        CREATE TABLE audit_outbox_cursors (
            sink TEXT PRIMARY KEY,
            shipped_seq INTEGER NOT NULL,
            updated_at TEXT NOT NULL
        )
        """,
    )
]

_INSERT: Final = (
    f"INSERT INTO audit_records ({AUDIT_COLUMNS}) "  # noqa: S608  # constant column list
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_HEAD: Final = "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1"


def _head(conn: sqlite3.Connection) -> ChainHead:
    row = conn.execute(_HEAD).fetchone()
    return ChainHead(row[0], row[1]) if row is not None else ChainHead(0, GENESIS_HASH)


def _insert(conn: sqlite3.Connection, records: list[AuditRecord]) -> None:
    if len(records) == 1:
        conn.execute(_INSERT, audit_row(records[0]))
    else:
        conn.executemany(_INSERT, [audit_row(r) for r in records])


class SqliteAuditStore:
    """The :class:`~aifr.audit.AuditStore` port over the SQLite state database."""

    def __init__(self, database: SqliteDatabase) -> None:
        self._db = database
        self._writer: sqlite3.Connection | None = None
        self._writer_lock = threading.Lock()
        self._last_head: ChainHead | None = None  # head of this writer's last commit
        database.migrate("audit", AUDIT_MIGRATIONS)

    def append(self, build: ChainBuilder) -> list[AuditRecord]:
        """Insert ``build(head)`` on the current head and commit, in one transaction.

        Raises:
            StorageError: the database failed (nothing was written).
        """
        with self._db.gate, self._writer_lock:  # the gate first, as every writer takes it
            conn = self._writer
            if conn is None:
                conn = self._writer = self._db.new_connection()
            head, self._last_head = self._last_head, None  # forgotten unless this commits
            try:
                records = self._commit(conn, build, head) if head is not None else None
                if records is None:  # no head remembered, or someone else appended since
                    records = self._commit(conn, build, None)
            except sqlite3.Error as exc:
                raise StorageError(
                    f"appending audit records failed: {exc}", action="appending audit records"
                ) from exc
            assert records is not None  # noqa: S101  # a commit on the read head never collides
            self._last_head = ChainHead(records[-1].seq, records[-1].hash)
        return records

    @staticmethod
    def _commit(
        conn: sqlite3.Connection, build: ChainBuilder, head: ChainHead | None
    ) -> list[AuditRecord] | None:
        """One transaction on ``head`` (read under the lock when ``None``).

        Returns ``None``, with nothing written, when a remembered ``head`` is no longer
        the head: the first insert then collides on ``seq``.
        """
        # Plain statements rather than the database's context managers: this is the hot
        # path, and two generator frames cost as much as the INSERT.
        conn.execute("BEGIN IMMEDIATE")
        try:
            records = build(head if head is not None else _head(conn))
            try:
                _insert(conn, records)
            except sqlite3.IntegrityError:
                if head is None:
                    raise
                conn.execute("ROLLBACK")
                return None
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return records

    def append_in(self, conn: object, build: ChainBuilder) -> list[AuditRecord]:
        """Read the head and insert ``build(head)`` inside the caller's transaction.

        Raises:
            AuditError: ``conn`` is not a sqlite3 connection inside a transaction.
            StorageError: the database failed.
        """
        if not isinstance(conn, sqlite3.Connection) or not conn.in_transaction:
            raise AuditError(
                "append_in needs a sqlite3 connection inside BEGIN IMMEDIATE "
                "(use SqliteDatabase.transaction())"
            )
        with translate_sqlite_errors("appending an audit record"):
            records = build(_head(conn))
            _insert(conn, records)
        return records

    def head(self) -> ChainHead:
        """Seq and hash of the newest committed record."""
        with translate_sqlite_errors("reading the audit head"):
            return _head(self._db.connect())

    def scan(
        self,
        *,
        after_seq: int = 0,
        since: str | None = None,
        until: str | None = None,
        principal: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> Iterator[AuditRecord]:
        """Records page by page, so no read transaction stays open between pages."""
        sql, params = scan_query(
            "audit_records",
            "?",
            after_seq=after_seq,
            since=since,
            until=until,
            principal=principal,
            newest_first=newest_first,
        )

        def fetch(position: int, size: int) -> list[sqlite3.Row]:
            with translate_sqlite_errors("reading audit records"):
                return self._db.connect().execute(sql, [*params, position, size]).fetchall()

        return page_records(fetch, limit=limit, newest_first=newest_first)

    def get(self, record_id: str) -> AuditRecord | None:
        """The record with id ``record_id`` (found through the seq the id carries), or ``None``."""
        seq = seq_of_record_id(record_id)
        if seq is None:
            return None
        with translate_sqlite_errors("reading an audit record"):
            row = (
                self._db.connect()
                .execute(
                    f"SELECT {AUDIT_COLUMNS} FROM audit_records WHERE seq = ? AND id = ?",  # noqa: S608  # constant column list
                    (seq, record_id),
                )
                .fetchone()
            )
        return record_from_row(row) if row is not None else None

    def seq_of_hash(self, record_hash: str) -> int | None:
        """The lowest seq whose stored hash is ``record_hash`` (a full scan; failures only)."""
        with translate_sqlite_errors("searching the audit chain"):
            row = (
                self._db.connect()
                .execute("SELECT MIN(seq) FROM audit_records WHERE hash = ?", (record_hash,))
                .fetchone()
            )
        return int(row[0]) if row is not None and row[0] is not None else None

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Keep ``checkpoint`` (the same seq signed twice by one key keeps the first)."""
        with self._db.transaction() as conn, translate_sqlite_errors("saving a checkpoint"):
            conn.execute(
                "INSERT INTO audit_checkpoints (seq, hash, ts, public_key, signature) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    checkpoint.seq,
                    checkpoint.hash,
                    checkpoint.ts,
                    checkpoint.public_key,
                    checkpoint.signature,
                ),
            )

    def checkpoints(self) -> list[Checkpoint]:
        """Every kept checkpoint, oldest first."""
        with translate_sqlite_errors("reading checkpoints"):
            rows = (
                self._db.connect()
                .execute(
                    "SELECT seq, hash, ts, public_key, signature FROM audit_checkpoints "
                    "ORDER BY seq, ts"
                )
                .fetchall()
            )
        return [Checkpoint(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def shipped_seq(self, sink: str) -> int:
        """The last seq delivered to ``sink`` (``0`` when none was)."""
        with translate_sqlite_errors("reading a shipping cursor"):
            row = (
                self._db.connect()
                .execute("SELECT shipped_seq FROM audit_outbox_cursors WHERE sink = ?", (sink,))
                .fetchone()
            )
        return int(row[0]) if row is not None else 0

    def mark_shipped(self, sink: str, seq: int) -> None:
        """Move ``sink``'s cursor forward to ``seq`` (never back), durably."""
        with self._db.transaction() as conn, translate_sqlite_errors("moving a cursor"):
            conn.execute(
                "INSERT INTO audit_outbox_cursors (sink, shipped_seq, updated_at) "
                "VALUES (?, ?, ?) ON CONFLICT (sink) DO UPDATE SET "
                "shipped_seq = max(shipped_seq, excluded.shipped_seq), "
                "updated_at = excluded.updated_at",
                (sink, seq, utc_timestamp()),
            )

    def close(self) -> None:
        """Close the group-commit connection (others belong to the database)."""
        with self._writer_lock:
            self._last_head = None
            if self._writer is not None:
                self._writer.close()
                self._writer = None


def open_sqlite_ledger(database: SqliteDatabase) -> AuditLedger:
    """An :class:`~aifr.audit.AuditLedger` over ``database`` (migrated on first use).

    Raises:
        StorageError: the database cannot be opened or migrated.
    """
    return AuditLedger(SqliteAuditStore(database))
