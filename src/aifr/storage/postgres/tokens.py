"""``PostgresTokenStore``: bearer-token digests in PostgreSQL, shared by every API process.

The same table as the SQLite adapter (component ``tokens``), created on first use. A
legacy ``.aifr/tokens.json`` is imported once, as on SQLite, so a project moved to
PostgreSQL keeps the tokens it had minted.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aifr.errors import ConfigError
from aifr.invocation import TokenRecord
from aifr.storage.postgres.database import PostgresDatabase, translate_pg_errors
from aifr.storage.sqlite.database import Migration
from aifr.storage.sqlite.tokens import read_legacy_token_file

__all__ = ["PG_TOKEN_MIGRATIONS", "PostgresTokenStore"]

logger = logging.getLogger(__name__)

PG_TOKEN_MIGRATIONS = [
    Migration(
        1,
        """
        CREATE TABLE tokens (
            digest TEXT PRIMARY KEY,
            principal TEXT NOT NULL,
            roles TEXT NOT NULL,
            operator TEXT,
            label TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION,
            revoked_at DOUBLE PRECISION
        )
        """,
    )
]

_COLUMNS = "digest, principal, roles, operator, label, created_at, expires_at, revoked_at"
_INSERT = f"INSERT INTO tokens ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"  # noqa: S608  # constant column list


def _record(row: Sequence[Any]) -> TokenRecord:
    return TokenRecord(
        digest=row[0],
        principal=row[1],
        roles=tuple(json.loads(row[2])),
        operator=row[3],
        label=row[4],
        created_at=row[5],
        expires_at=row[6],
        revoked_at=row[7],
    )


def _row(record: TokenRecord) -> tuple[Any, ...]:
    return (
        record.digest,
        record.principal,
        json.dumps(list(record.roles)),
        record.operator,
        record.label,
        record.created_at,
        record.expires_at,
        record.revoked_at,
    )


class PostgresTokenStore:
    """A :class:`~aifr.invocation.TokenStore` on PostgreSQL."""

    def __init__(self, database: PostgresDatabase, *, legacy_file: Path | None = None) -> None:
        self.database = database
        self.legacy_file = legacy_file
        self._ready = False
        self._lock = threading.Lock()

    def _migrated(self) -> PostgresDatabase:
        if not self._ready:
            with self._lock:
                if not self._ready:
                    self.database.migrate("tokens", PG_TOKEN_MIGRATIONS)
                    self._import_legacy()
                    self._ready = True
        return self.database

    def _import_legacy(self) -> None:
        path = self.legacy_file
        if path is None or not path.exists():
            return
        records = read_legacy_token_file(path)
        with translate_pg_errors("importing tokens"), self.database.connection() as conn:
            for record in records:
                conn.execute(_INSERT + " ON CONFLICT (digest) DO NOTHING", _row(record))
        try:
            path.rename(path.with_name(path.name + ".migrated"))
        except OSError as exc:
            raise ConfigError(
                f"{path}: imported into the state database but cannot be renamed: {exc.strerror}",
                file=str(path),
            ) from exc
        logger.info("imported %d token(s) from %s into the state database", len(records), path)

    def add(self, record: TokenRecord) -> None:
        """Store a new token record (a record with the same digest is replaced).

        Raises:
            StorageError: the database failed.
        """
        with translate_pg_errors("storing a token"), self._migrated().connection() as conn:
            conn.execute(
                _INSERT + " ON CONFLICT (digest) DO UPDATE SET principal = EXCLUDED.principal, "
                "roles = EXCLUDED.roles, operator = EXCLUDED.operator, label = EXCLUDED.label, "
                "created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, "
                "revoked_at = EXCLUDED.revoked_at",
                _row(record),
            )

    def get(self, digest: str) -> TokenRecord | None:
        """The record stored under ``digest``, or ``None``."""
        with translate_pg_errors("reading a token"), self._migrated().connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM tokens WHERE digest = %s",  # noqa: S608  # constant column list
                (digest,),
            ).fetchone()
        return _record(row) if row else None

    def list(self) -> list[TokenRecord]:
        """Every record, oldest first."""
        with translate_pg_errors("listing tokens"), self._migrated().connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM tokens ORDER BY created_at, digest"  # noqa: S608  # constant column list
            ).fetchall()
        return [_record(row) for row in rows]

    def revoke(self, digest: str, at: float) -> None:
        """Mark the record revoked at ``at`` (a second revocation keeps the first time)."""
        with translate_pg_errors("revoking a token"), self._migrated().connection() as conn:
            conn.execute(
                "UPDATE tokens SET revoked_at = %s WHERE digest = %s AND revoked_at IS NULL",
                (at, digest),
            )
