"""``PostgresAuditStore``: the audit chain, checkpoints and cursors in PostgreSQL.

For deployments where many workers on many machines share one ledger. Writers serialize
on one lock row (``SELECT ... FOR UPDATE`` on ``aifr_audit_head``) and then read the
head from the records themselves, inside the same transaction, so every worker extends
one chain and a truncated tail is not papered over by a cached head. ``psycopg`` is
imported on first use (the ``pg`` extra); nothing connects at import time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

from aifr.audit import AuditLedger, AuditRecord, ChainBuilder, ChainHead, Checkpoint
from aifr.audit.record import GENESIS_HASH, seq_of_record_id, utc_timestamp
from aifr.errors import AuditError, ConfigError, ErrorCode, StorageError
from aifr.storage.audit_rows import (
    AUDIT_COLUMNS,
    audit_row,
    page_records,
    record_from_row,
    scan_query,
)
from aifr.storage.postgres.database import create_schema

if TYPE_CHECKING:
    import psycopg

__all__ = ["AUDIT_SCHEMA_VERSION", "PostgresAuditStore", "open_postgres_ledger"]

AUDIT_SCHEMA_VERSION: Final = 1
"""The audit tables' schema version (``schema_versions``, component ``audit``)."""

_DDL: Final = (
    """
    CREATE TABLE IF NOT EXISTS aifr_audit_records (
        seq BIGINT PRIMARY KEY,
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
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS aifr_audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1)
    )
    """,
    "INSERT INTO aifr_audit_head (id) VALUES (1) ON CONFLICT DO NOTHING",
    """
    CREATE TABLE IF NOT EXISTS aifr_audit_checkpoints (
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL,
        ts TEXT NOT NULL,
        public_key TEXT NOT NULL,
        signature TEXT NOT NULL,
        PRIMARY KEY (seq, public_key)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS aifr_audit_outbox_cursors (
        sink TEXT PRIMARY KEY,
        shipped_seq BIGINT NOT NULL,
        updated_at TEXT NOT NULL
    )
    """,
)
_INSERT: Final = (
    f"INSERT INTO aifr_audit_records ({AUDIT_COLUMNS}) "  # noqa: S608  # constant column list
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_HEAD: Final = "SELECT seq, hash FROM aifr_audit_records ORDER BY seq DESC LIMIT 1"


def _psycopg() -> Any:
    try:
        import psycopg  # imported on first use: only PostgreSQL deployments install it
    except ImportError as exc:
        raise ConfigError(
            "a postgresql:// database_url needs the pg extra: pip install 'aifr[pg]'",
            code=ErrorCode.CONFIG_MISSING_EXTRA,
            extra="pg",
        ) from exc
    return psycopg


@contextmanager
def _translate(action: str) -> Iterator[None]:
    """Turn psycopg errors raised inside the block into ``StorageError`` naming ``action``."""
    error: type[Exception] = _psycopg().Error
    try:
        yield
    except error as exc:
        raise StorageError(f"{action} failed: {exc}", action=action) from exc


class PostgresAuditStore:
    """The :class:`~aifr.audit.AuditStore` port over PostgreSQL.

    ``schema`` puts the tables in that schema (created if missing), so several projects
    or test runs can share one database.
    """

    def __init__(self, dsn: str, *, schema: str | None = None) -> None:
        self._dsn = dsn
        self._schema = schema
        self._local = threading.local()
        self._all: list[psycopg.Connection[tuple[Any, ...]]] = []
        self._all_lock = threading.Lock()
        self._migrate()

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn: psycopg.Connection[tuple[Any, ...]] | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn
        psycopg = _psycopg()
        with _translate("connecting to PostgreSQL"):
            conn = psycopg.connect(self._dsn, autocommit=True)
            if self._schema is not None:
                identifier = psycopg.sql.Identifier(self._schema)
                create_schema(conn, self._schema)
                conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(identifier))
        self._local.conn = conn
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _migrate(self) -> None:
        conn = self._connect()
        with _translate("creating the audit tables"), conn.transaction():
            # Two processes creating the tables at once would collide in the catalog.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('aifr_schema_versions'))")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_versions ("
                "component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            row = conn.execute(
                "SELECT version FROM schema_versions WHERE component = 'audit'"
            ).fetchone()
            if row is not None and row[0] > AUDIT_SCHEMA_VERSION:
                raise StorageError(
                    f"PostgreSQL schema {self._schema or 'public'}: 'audit' is at version "
                    f"{row[0]}, newer than this aifr knows ({AUDIT_SCHEMA_VERSION}); "
                    "upgrade aifr",
                    code=ErrorCode.STORAGE_SCHEMA_MISMATCH,
                    component="audit",
                )
            for statement in _DDL:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_versions (component, version) VALUES ('audit', %s) "
                "ON CONFLICT (component) DO NOTHING",
                (AUDIT_SCHEMA_VERSION,),
            )

    def _append(
        self, conn: psycopg.Connection[tuple[Any, ...]], build: ChainBuilder
    ) -> list[AuditRecord]:
        conn.execute("SELECT id FROM aifr_audit_head WHERE id = 1 FOR UPDATE")
        row = conn.execute(_HEAD).fetchone()
        records = build(
            ChainHead(row[0], row[1]) if row is not None else ChainHead(0, GENESIS_HASH)
        )
        with conn.cursor() as cursor:
            cursor.executemany(_INSERT, [audit_row(r) for r in records])
        return records

    def append(self, build: ChainBuilder) -> list[AuditRecord]:
        """Lock the chain, read the head, insert ``build(head)`` and commit.

        Raises:
            StorageError: PostgreSQL failed (nothing was written).
        """
        conn = self._connect()
        with _translate("appending audit records"), conn.transaction():
            return self._append(conn, build)

    def append_in(self, conn: object, build: ChainBuilder) -> list[AuditRecord]:
        """Like :meth:`append`, inside the caller's open transaction on ``conn``.

        Raises:
            AuditError: ``conn`` is not a psycopg connection inside a transaction.
            StorageError: PostgreSQL failed.
        """
        psycopg = _psycopg()
        status = psycopg.pq.TransactionStatus
        # In pipeline mode libpq reports the transaction's status only at a sync (between
        # syncs it reads ACTIVE or IDLE), so there only a failed transaction is refused.
        if not isinstance(conn, psycopg.Connection) or conn.info.transaction_status not in (
            (status.INTRANS, status.ACTIVE, status.IDLE)
            if conn.info.pipeline_status != psycopg.pq.PipelineStatus.OFF
            else (status.INTRANS,)
        ):
            raise AuditError("append_in needs a psycopg connection inside a transaction")
        with _translate("appending an audit record"):
            return self._append(conn, build)

    def head(self) -> ChainHead:
        """Seq and hash of the newest committed record."""
        with _translate("reading the audit head"):
            row = self._connect().execute(_HEAD).fetchone()
        return ChainHead(row[0], row[1]) if row is not None else ChainHead(0, GENESIS_HASH)

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
        """Records page by page, in seq order (or reversed), filtered."""
        sql, params = scan_query(
            "aifr_audit_records",
            "%s",
            after_seq=after_seq,
            since=since,
            until=until,
            principal=principal,
            newest_first=newest_first,
        )

        def fetch(position: int, size: int) -> list[tuple[Any, ...]]:
            with _translate("reading audit records"):
                return self._connect().execute(sql, [*params, position, size]).fetchall()

        return page_records(fetch, limit=limit, newest_first=newest_first)

    def get(self, record_id: str) -> AuditRecord | None:
        """The record with id ``record_id``, or ``None``."""
        seq = seq_of_record_id(record_id)
        if seq is None:
            return None
        with _translate("reading an audit record"):
            row = (
                self._connect()
                .execute(
                    f"SELECT {AUDIT_COLUMNS} FROM aifr_audit_records WHERE seq = %s AND id = %s",  # noqa: S608  # constant column list
                    (seq, record_id),
                )
                .fetchone()
            )
        return record_from_row(row) if row is not None else None

    def seq_of_hash(self, record_hash: str) -> int | None:
        """The lowest seq whose stored hash is ``record_hash``."""
        with _translate("searching the audit chain"):
            row = (
                self._connect()
                .execute("SELECT MIN(seq) FROM aifr_audit_records WHERE hash = %s", (record_hash,))
                .fetchone()
            )
        return int(row[0]) if row is not None and row[0] is not None else None

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Keep ``checkpoint`` (the same seq signed twice by one key keeps the first)."""
        with _translate("saving a checkpoint"):
            self._connect().execute(
                "INSERT INTO aifr_audit_checkpoints (seq, hash, ts, public_key, signature) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
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
        with _translate("reading checkpoints"):
            rows = (
                self._connect()
                .execute(
                    "SELECT seq, hash, ts, public_key, signature FROM aifr_audit_checkpoints "
                    "ORDER BY seq, ts"
                )
                .fetchall()
            )
        return [Checkpoint(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def shipped_seq(self, sink: str) -> int:
        """The last seq delivered to ``sink`` (``0`` when none was)."""
        with _translate("reading a shipping cursor"):
            row = (
                self._connect()
                .execute(
                    "SELECT shipped_seq FROM aifr_audit_outbox_cursors WHERE sink = %s", (sink,)
                )
                .fetchone()
            )
        return int(row[0]) if row is not None else 0

    def mark_shipped(self, sink: str, seq: int) -> None:
        """Move ``sink``'s cursor forward to ``seq`` (never back)."""
        with _translate("moving a cursor"):
            self._connect().execute(
                "INSERT INTO aifr_audit_outbox_cursors (sink, shipped_seq, updated_at) "
                "VALUES (%s, %s, %s) ON CONFLICT (sink) DO UPDATE SET "
                "shipped_seq = GREATEST(aifr_audit_outbox_cursors.shipped_seq, "
                "excluded.shipped_seq), updated_at = excluded.updated_at",
                (sink, seq, utc_timestamp()),
            )

    def close(self) -> None:
        """Close every connection this store opened."""
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


def open_postgres_ledger(dsn: str, *, schema: str | None = None) -> AuditLedger:
    """An :class:`~aifr.audit.AuditLedger` over PostgreSQL at ``dsn``.

    Raises:
        ConfigError: psycopg is not installed (the ``pg`` extra).
        StorageError: the database cannot be reached or the tables cannot be created.
    """
    return AuditLedger(PostgresAuditStore(dsn, schema=schema))
