"""``SqliteTokenStore``: bearer-token digests in the state database.

The table is created on first use (component ``tokens``). Tokens minted before it
existed lived in ``.aifr/tokens.json`` (``sha256 -> identity``); on first use that file
is imported, once, and renamed ``tokens.json.migrated`` so it is never read again.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from aifr.errors import ConfigError
from aifr.invocation import TokenRecord
from aifr.storage.sqlite.database import Migration, SqliteDatabase, translate_sqlite_errors

__all__ = ["TOKEN_MIGRATIONS", "SqliteTokenStore", "read_legacy_token_file"]

logger = logging.getLogger(__name__)

TOKEN_MIGRATIONS = [
    Migration(
        1,
        """
        CREATE TABLE tokens (
            digest TEXT PRIMARY KEY,
            principal TEXT NOT NULL,
            roles TEXT NOT NULL,
            operator TEXT,
            label TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL,
            revoked_at REAL
        );
        """,
    )
]

_COLUMNS = "digest, principal, roles, operator, label, created_at, expires_at, revoked_at"


def _record(row: sqlite3.Row) -> TokenRecord:
    return TokenRecord(
        digest=row["digest"],
        principal=row["principal"],
        roles=tuple(json.loads(row["roles"])),
        operator=row["operator"],
        label=row["label"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


def _legacy_entry(digest: str, raw: Any, path: Path) -> TokenRecord:
    roles = raw.get("roles") or [] if isinstance(raw, dict) else None
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("principal"), str)
        or not isinstance(roles, list)
        or not all(isinstance(r, str) for r in roles)
        or not isinstance(raw.get("operator"), (str, type(None)))
    ):
        raise ConfigError(
            f"{path}: token entry {digest[:12]}... needs a string 'principal', "
            "a list of string 'roles' and a string or null 'operator'",
            file=str(path),
        )
    return TokenRecord(
        digest=digest,
        principal=raw["principal"],
        roles=tuple(roles),
        operator=raw.get("operator"),
        label=str(raw.get("label", "")),
        created_at=float(raw.get("created_at", 0.0)),
    )


def read_legacy_token_file(path: Path) -> list[TokenRecord]:
    """The records of a ``tokens.json`` written by aifr before tokens moved to the database.

    Raises:
        ConfigError: the file cannot be read or is malformed.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a token file: {exc}", file=str(path)) from exc
    tokens = document.get("tokens") if isinstance(document, dict) else None
    if not isinstance(tokens, dict):
        raise ConfigError(f"{path}: expected an object with 'tokens'", file=str(path))
    return [_legacy_entry(digest, raw, path) for digest, raw in tokens.items()]


class SqliteTokenStore:
    """A :class:`~aifr.invocation.TokenStore` on the project's SQLite database."""

    def __init__(self, database: SqliteDatabase, *, legacy_file: Path | None = None) -> None:
        self.database = database
        self.legacy_file = legacy_file
        self._ready = False
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        if not self._ready:
            with self._lock:
                if not self._ready:
                    self.database.migrate("tokens", TOKEN_MIGRATIONS)
                    self._import_legacy()
                    self._ready = True
        return self.database.connect()

    def _import_legacy(self) -> None:
        path = self.legacy_file
        if path is None or not path.exists():
            return
        records = read_legacy_token_file(path)
        conn = self.database.connect()
        with self.database.transaction(conn):
            for record in records:
                self._insert(conn, record, replace=False)
        try:
            path.rename(path.with_name(path.name + ".migrated"))
        except OSError as exc:
            raise ConfigError(
                f"{path}: imported into the state database but cannot be renamed: {exc.strerror}",
                file=str(path),
            ) from exc
        logger.info("imported %d token(s) from %s into the state database", len(records), path)

    @staticmethod
    def _insert(conn: sqlite3.Connection, record: TokenRecord, *, replace: bool) -> None:
        verb = "INSERT" if replace else "INSERT OR IGNORE"
        conn.execute(
            f"{verb} INTO tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.digest,
                record.principal,
                json.dumps(list(record.roles)),
                record.operator,
                record.label,
                record.created_at,
                record.expires_at,
                record.revoked_at,
            ),
        )

    def add(self, record: TokenRecord) -> None:
        """Store a new token record.

        Raises:
            StorageError: the database failed (a digest collision included).
        """
        conn = self._conn()
        with translate_sqlite_errors("storing a token"), self.database.transaction(conn):
            self._insert(conn, record, replace=True)

    def get(self, digest: str) -> TokenRecord | None:
        """The record stored under ``digest``, or ``None``."""
        conn = self._conn()
        with translate_sqlite_errors("reading a token"):
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM tokens WHERE digest = ?",  # noqa: S608  # constant column list
                (digest,),
            ).fetchone()
        return _record(row) if row else None

    def list(self) -> list[TokenRecord]:
        """Every record, oldest first."""
        conn = self._conn()
        with translate_sqlite_errors("listing tokens"):
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM tokens ORDER BY created_at, digest"  # noqa: S608  # constant column list
            ).fetchall()
        return [_record(row) for row in rows]

    def revoke(self, digest: str, at: float) -> None:
        """Mark the record revoked at ``at`` (a second revocation keeps the first time)."""
        conn = self._conn()
        with translate_sqlite_errors("revoking a token"), self.database.transaction(conn):
            conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE digest = ? AND revoked_at IS NULL",
                (at, digest),
            )
