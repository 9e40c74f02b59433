"""``PostgresIdempotencyStore``: idempotency keys and first results in PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue

from aifr.audit import AuditEvent, AuditLedger, AuditRecord
from aifr.invocation import IdempotencyRecord
from aifr.storage.postgres.database import PostgresDatabase, translate_pg_errors
from aifr.storage.sqlite.database import Migration

if TYPE_CHECKING:
    import psycopg

__all__ = ["PG_IDEMPOTENCY_MIGRATIONS", "PostgresIdempotencyStore"]

PG_IDEMPOTENCY_MIGRATIONS = [
    Migration(
        1,
        """
        CREATE TABLE idempotency_keys (
            principal TEXT NOT NULL,
            key TEXT NOT NULL,
            request_digest TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            result TEXT,
            completed_at DOUBLE PRECISION,
            PRIMARY KEY (principal, key)
        )
        """,
    )
]

_SELECT = (
    "SELECT principal, key, request_digest, created_at, result, completed_at "
    "FROM idempotency_keys WHERE principal = %s AND key = %s"
)


def _record(row: Sequence[Any]) -> IdempotencyRecord:
    return IdempotencyRecord(
        principal=row[0],
        key=row[1],
        request_digest=row[2],
        created_at=row[3],
        result=json.loads(row[4]) if row[4] is not None else None,
        completed_at=row[5],
    )


class PostgresIdempotencyStore:
    """The :class:`~aifr.invocation.IdempotencyStore` port over PostgreSQL."""

    def __init__(self, database: PostgresDatabase, ledger: AuditLedger) -> None:
        self._db = database
        self._ledger = ledger
        database.migrate("idempotency", PG_IDEMPOTENCY_MIGRATIONS)

    def get(self, principal: str, key: str) -> IdempotencyRecord | None:
        """The record for this principal's key, or ``None``."""
        with translate_pg_errors("reading an idempotency key"), self._db.connection() as conn:
            row = conn.execute(_SELECT, (principal, key)).fetchone()
        return _record(row) if row is not None else None

    def claim(
        self, principal: str, key: str, request_digest: str, now: float
    ) -> IdempotencyRecord | None:
        """Insert the claim; ``None`` when this call inserted it, else the existing record."""

        def claim_in(conn: psycopg.Connection[tuple[Any, ...]]) -> IdempotencyRecord | None:
            inserted = conn.execute(
                "INSERT INTO idempotency_keys (principal, key, request_digest, created_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (principal, key) DO NOTHING",
                (principal, key, request_digest, now),
            ).rowcount
            if inserted == 1:
                return None
            row = conn.execute(_SELECT, (principal, key)).fetchone()
            return _record(row) if row is not None else None

        return self._db.write("claiming an idempotency key", claim_in)

    def complete(
        self,
        principal: str,
        key: str,
        result: dict[str, JsonValue],
        now: float,
        audit: AuditEvent,
    ) -> AuditRecord:
        """Store the result and append the audit record in one transaction."""

        def complete_in(conn: psycopg.Connection[tuple[Any, ...]]) -> AuditRecord:
            conn.execute(
                "UPDATE idempotency_keys SET result = %s, completed_at = %s "
                "WHERE principal = %s AND key = %s",
                (json.dumps(result, sort_keys=True), now, principal, key),
            )
            return self._ledger.append_in(conn, audit)

        return self._db.write("completing an idempotency key", complete_in)

    def release(self, principal: str, key: str) -> None:
        """Delete an unfinished claim."""
        with translate_pg_errors("releasing an idempotency key"), self._db.connection() as conn:
            conn.execute(
                "DELETE FROM idempotency_keys WHERE principal = %s AND key = %s AND result IS NULL",
                (principal, key),
            )
