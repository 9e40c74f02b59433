"""``SqliteCircuitStore``: the last recorded circuit-breaker state of each capability."""

from __future__ import annotations

from aifr.invocation import CircuitRecord
from aifr.storage.sqlite.database import Migration, SqliteDatabase, translate_sqlite_errors

__all__ = ["CIRCUIT_MIGRATIONS", "SqliteCircuitStore"]

CIRCUIT_MIGRATIONS = [
    Migration(
        1,
        """
        CREATE TABLE circuits (
            capability_id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            failures INTEGER NOT NULL,
            opened_at REAL,
            updated_at REAL NOT NULL
        )
        """,
    )
]


class SqliteCircuitStore:
    """The :class:`~aifr.invocation.CircuitStore` port over the SQLite state database."""

    def __init__(self, database: SqliteDatabase) -> None:
        self._db = database
        database.migrate("circuits", CIRCUIT_MIGRATIONS)

    def save(self, record: CircuitRecord) -> None:
        """Insert or replace the capability's state."""
        with self._db.transaction() as conn, translate_sqlite_errors("saving circuit state"):
            conn.execute(
                "INSERT INTO circuits (capability_id, state, failures, opened_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (capability_id) DO UPDATE SET "
                "state = excluded.state, failures = excluded.failures, "
                "opened_at = excluded.opened_at, updated_at = excluded.updated_at",
                (
                    record.capability_id,
                    record.state,
                    record.failures,
                    record.opened_at,
                    record.updated_at,
                ),
            )

    def load(self) -> list[CircuitRecord]:
        """Every recorded state, by capability id."""
        with translate_sqlite_errors("reading circuit state"):
            rows = (
                self._db.connect()
                .execute(
                    "SELECT capability_id, state, failures, opened_at, updated_at FROM circuits "
                    "ORDER BY capability_id"
                )
                .fetchall()
            )
        return [
            CircuitRecord(
                capability_id=r["capability_id"],
                state=r["state"],
                failures=r["failures"],
                opened_at=r["opened_at"],
                updated_at=r["updated_at"],
            )
            for r in rows
        ]
