"""``SqliteIdempotencyStore``: idempotency keys and first results in the state database."""

from __future__ import annotations

import json
import sqlite3

from pydantic import JsonValue

from aifr.audit import AuditEvent, AuditLedger, AuditRecord
from aifr.invocation import IdempotencyRecord
from aifr.storage.sqlite.database import Migration, SqliteDatabase, translate_sqlite_errors

__all__ = ["IDEMPOTENCY_MIGRATIONS", "SqliteIdempotencyStore"]

IDEMPOTENCY_MIGRATIONS = [
    Migration(
        1,
        """
        CREATE TABLE idempotency_keys (
            principal TEXT NOT NULL,
            key TEXT NOT NULL,
            request_digest TEXT NOT NULL,
            created_at REAL NOT NULL,
            result TEXT,
            completed_at REAL,
            PRIMARY KEY (principal, key)
        )
        """,
    )
]

_SELECT = (
    "SELECT principal, key, request_digest, created_at, result, completed_at "
    "FROM idempotency_keys WHERE principal = ? AND key = ?"
)


def _record(row: sqlite3.Row) -> IdempotencyRecord:
    return IdempotencyRecord(
        principal=row["principal"],
        key=row["key"],
        request_digest=row["request_digest"],
        created_at=row["created_at"],
        result=json.loads(row["result"]) if row["result"] is not None else None,
        completed_at=row["completed_at"],
    )


class SqliteIdempotencyStore:
    """The :class:`~aifr.invocation.IdempotencyStore` port over the SQLite state database."""

    def __init__(self, database: SqliteDatabase, ledger: AuditLedger) -> None:
        self._db = database
        self._ledger = ledger
        database.migrate("idempotency", IDEMPOTENCY_MIGRATIONS)

    def get(self, principal: str, key: str) -> IdempotencyRecord | None:
        """The record for this principal's key, or ``None``."""
        with translate_sqlite_errors("reading an idempotency key"):
            row = self._db.connect().execute(_SELECT, (principal, key)).fetchone()
        return _record(row) if row is not None else None

    def claim(
        self, principal: str, key: str, request_digest: str, now: float
    ) -> IdempotencyRecord | None:
        """Insert the claim; ``None`` when this call inserted it, else the existing record."""
        with self._db.transaction() as conn, translate_sqlite_errors("claiming an idempotency key"):
            inserted = conn.execute(
                "INSERT INTO idempotency_keys (principal, key, request_digest, created_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (principal, key) DO NOTHING",
                (principal, key, request_digest, now),
            ).rowcount
            if inserted == 1:
                return None
            row = conn.execute(_SELECT, (principal, key)).fetchone()
        return _record(row)

    def complete(
        self,
        principal: str,
        key: str,
        result: dict[str, JsonValue],
        now: float,
        audit: AuditEvent,
    ) -> AuditRecord:
        """Store the result and append the audit record in one transaction."""
        with (
            self._db.transaction() as conn,
            translate_sqlite_errors("completing an idempotency key"),
        ):
            conn.execute(
                "UPDATE idempotency_keys SET result = ?, completed_at = ? "
                "WHERE principal = ? AND key = ?",
                (json.dumps(result, sort_keys=True), now, principal, key),
            )
            return self._ledger.append_in(conn, audit)

    def release(self, principal: str, key: str) -> None:
        """Delete an unfinished claim."""
        with (
            self._db.transaction() as conn,
            translate_sqlite_errors("releasing an idempotency key"),
        ):
            conn.execute(
                "DELETE FROM idempotency_keys WHERE principal = ? AND key = ? AND result IS NULL",
                (principal, key),
            )
