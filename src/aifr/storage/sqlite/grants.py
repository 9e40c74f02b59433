"""``SqliteGrantStore``: policy grants in the state database.

The table is created on first use (component ``grants``), so commands that never touch
grants never write the database.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence

from aifr.errors import PolicyError
from aifr.policy import Grant, grant_not_found
from aifr.storage.sqlite.database import Migration, SqliteDatabase, translate_sqlite_errors

__all__ = ["GRANT_MIGRATIONS", "SqliteGrantStore"]

GRANT_MIGRATIONS = [
    Migration(
        1,
        """
        CREATE TABLE grants (
            id TEXT PRIMARY KEY,
            principal TEXT NOT NULL,
            capability TEXT NOT NULL,
            constraints TEXT NOT NULL,
            issued_by TEXT NOT NULL,
            issued_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            reason TEXT NOT NULL,
            revoked_at REAL,
            revoked_by TEXT
        );
        CREATE INDEX grants_principal ON grants(principal, expires_at);
        """,
    )
]

_COLUMNS = (
    "id, principal, capability, constraints, issued_by, issued_at, expires_at, reason, "
    "revoked_at, revoked_by"
)


def _grant(row: sqlite3.Row) -> Grant:
    return Grant(
        id=row["id"],
        principal=row["principal"],
        capability=row["capability"],
        constraints=json.loads(row["constraints"]),
        issued_by=row["issued_by"],
        issued_at=row["issued_at"],
        expires_at=row["expires_at"],
        reason=row["reason"],
        revoked_at=row["revoked_at"],
        revoked_by=row["revoked_by"],
    )


class SqliteGrantStore:
    """A :class:`~aifr.policy.GrantStore` on the project's SQLite database."""

    def __init__(self, database: SqliteDatabase) -> None:
        self.database = database
        self._ready = False
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        if not self._ready:
            with self._lock:
                if not self._ready:
                    self.database.migrate("grants", GRANT_MIGRATIONS)
                    self._ready = True
        return self.database.connect()

    def add(self, grant: Grant) -> None:
        """Store a new grant.

        Raises:
            PolicyError: a grant with the same id exists.
            StorageError: the database failed.
        """
        conn = self._conn()
        try:
            with self.database.transaction(conn):
                conn.execute(
                    f"INSERT INTO grants ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608  # constant column list
                    (
                        grant.id,
                        grant.principal,
                        grant.capability,
                        json.dumps(dict(grant.constraints), sort_keys=True),
                        grant.issued_by,
                        grant.issued_at,
                        grant.expires_at,
                        grant.reason,
                        grant.revoked_at,
                        grant.revoked_by,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise PolicyError(f"grant {grant.id!r} already exists", grant_id=grant.id) from exc

    def get(self, grant_id: str) -> Grant | None:
        """The grant with this id, or ``None``."""
        conn = self._conn()
        with translate_sqlite_errors("reading a grant"):
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM grants WHERE id = ?",  # noqa: S608  # constant column list
                (grant_id,),
            ).fetchone()
        return _grant(row) if row else None

    def list(self, *, principal: str | None = None, active_at: float | None = None) -> list[Grant]:
        """Grants oldest first, optionally one principal's or only those active at a time."""
        conn = self._conn()
        with translate_sqlite_errors("listing grants"):
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM grants "  # noqa: S608  # constant column list
                "WHERE (?1 IS NULL OR principal = ?1) "
                "AND (?2 IS NULL OR (revoked_at IS NULL AND expires_at > ?2)) "
                "ORDER BY issued_at, id",
                (principal, active_at),
            ).fetchall()
        return [_grant(row) for row in rows]

    def active_for(self, principal: str, now: float) -> Sequence[Grant]:
        """``principal``'s grants active at ``now``."""
        return self.list(principal=principal, active_at=now)

    def revoke(self, grant_id: str, *, revoked_by: str, at: float) -> Grant:
        """Revoke a grant (revoking twice keeps the first revocation).

        Raises:
            PolicyError: ``policy.grant_not_found`` for an unknown id.
            StorageError: the database failed.
        """
        conn = self._conn()
        with self.database.transaction(conn):
            conn.execute(
                "UPDATE grants SET revoked_at = ?, revoked_by = ? "
                "WHERE id = ? AND revoked_at IS NULL",
                (at, revoked_by, grant_id),
            )
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM grants WHERE id = ?",  # noqa: S608  # constant column list
                (grant_id,),
            ).fetchone()
        if row is None:
            raise grant_not_found(grant_id)
        return _grant(row)
