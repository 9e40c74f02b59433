"""``PostgresGrantStore``: policy grants in PostgreSQL (tables created on first use)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from aifr.errors import PolicyError
from aifr.policy import Grant, grant_not_found
from aifr.storage.postgres.database import PostgresDatabase, import_psycopg, translate_pg_errors
from aifr.storage.sqlite.database import Migration

__all__ = ["PG_GRANT_MIGRATIONS", "PostgresGrantStore"]

PG_GRANT_MIGRATIONS = [
    Migration(
        1,
        """
        CREATE TABLE grants (
            id TEXT PRIMARY KEY,
            principal TEXT NOT NULL,
            capability TEXT NOT NULL,
            constraints TEXT NOT NULL,
            issued_by TEXT NOT NULL,
            issued_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            reason TEXT NOT NULL,
            revoked_at DOUBLE PRECISION,
            revoked_by TEXT
        );
        CREATE INDEX grants_principal ON grants (principal, expires_at)
        """,
    )
]

_COLUMNS = (
    "id, principal, capability, constraints, issued_by, issued_at, expires_at, reason, "
    "revoked_at, revoked_by"
)


def _grant(row: Sequence[Any]) -> Grant:
    return Grant(
        id=row[0],
        principal=row[1],
        capability=row[2],
        constraints=json.loads(row[3]),
        issued_by=row[4],
        issued_at=row[5],
        expires_at=row[6],
        reason=row[7],
        revoked_at=row[8],
        revoked_by=row[9],
    )


class PostgresGrantStore:
    """A :class:`~aifr.policy.GrantStore` on PostgreSQL."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        self._ready = False
        self._lock = threading.Lock()

    def _migrated(self) -> PostgresDatabase:
        if not self._ready:
            with self._lock:
                if not self._ready:
                    self.database.migrate("grants", PG_GRANT_MIGRATIONS)
                    self._ready = True
        return self.database

    def add(self, grant: Grant) -> None:
        """Store a new grant.

        Raises:
            PolicyError: a grant with the same id exists.
            StorageError: the database failed.
        """
        database = self._migrated()
        unique = import_psycopg().errors.UniqueViolation
        with translate_pg_errors("adding a grant"), database.connection() as conn:
            try:
                conn.execute(
                    f"INSERT INTO grants ({_COLUMNS}) "  # noqa: S608  # constant column list
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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
            except unique as exc:
                raise PolicyError(f"grant {grant.id!r} already exists", grant_id=grant.id) from exc

    def get(self, grant_id: str) -> Grant | None:
        """The grant with this id, or ``None``."""
        with translate_pg_errors("reading a grant"), self._migrated().connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM grants WHERE id = %s",  # noqa: S608  # constant column list
                (grant_id,),
            ).fetchone()
        return _grant(row) if row else None

    def list(self, *, principal: str | None = None, active_at: float | None = None) -> list[Grant]:
        """Grants oldest first, optionally one principal's or only those active at a time."""
        with translate_pg_errors("listing grants"), self._migrated().connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM grants "  # noqa: S608  # constant column list
                "WHERE (%(p)s::text IS NULL OR principal = %(p)s) AND (%(t)s::float8 IS NULL "
                "OR (revoked_at IS NULL AND expires_at > %(t)s)) ORDER BY issued_at, id",
                {"p": principal, "t": active_at},
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
        with translate_pg_errors("revoking a grant"), self._migrated().connection() as conn:
            conn.execute(
                "UPDATE grants SET revoked_at = %s, revoked_by = %s "
                "WHERE id = %s AND revoked_at IS NULL",
                (at, revoked_by, grant_id),
            )
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM grants WHERE id = %s",  # noqa: S608  # constant column list
                (grant_id,),
            ).fetchone()
        if row is None:
            raise grant_not_found(grant_id)
        return _grant(row)
