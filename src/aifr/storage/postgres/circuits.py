"""``PostgresCircuitStore``: the last recorded circuit-breaker state of each capability."""

from __future__ import annotations

from aifr.invocation import CircuitRecord
from aifr.storage.postgres.database import PostgresDatabase, translate_pg_errors
from aifr.storage.sqlite.database import Migration

__all__ = ["PG_CIRCUIT_MIGRATIONS", "PostgresCircuitStore"]

PG_CIRCUIT_MIGRATIONS = [
    Migration(
        1,
        """
        CREATE TABLE circuits (
            capability_id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            failures INTEGER NOT NULL,
            opened_at DOUBLE PRECISION,
            updated_at DOUBLE PRECISION NOT NULL
        )
        """,
    )
]


class PostgresCircuitStore:
    """The :class:`~aifr.invocation.CircuitStore` port over PostgreSQL."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database
        database.migrate("circuits", PG_CIRCUIT_MIGRATIONS)

    def save(self, record: CircuitRecord) -> None:
        """Insert or replace the capability's state."""
        with translate_pg_errors("saving circuit state"), self._db.connection() as conn:
            conn.execute(
                "INSERT INTO circuits (capability_id, state, failures, opened_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (capability_id) DO UPDATE SET "
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
        with translate_pg_errors("reading circuit state"), self._db.connection() as conn:
            rows = conn.execute(
                "SELECT capability_id, state, failures, opened_at, updated_at FROM circuits "
                "ORDER BY capability_id"
            ).fetchall()
        return [CircuitRecord(r[0], r[1], r[2], r[3], r[4]) for r in rows]
