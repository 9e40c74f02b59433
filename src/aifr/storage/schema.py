"""Schema versions of the state database: what each component is at, and upgrading it.

Every store owns a numbered list of migrations (``Migration``) and records how far it
got in ``schema_versions``, on SQLite and PostgreSQL alike. This module gathers the
lists of one backend so ``aifr db status`` can show them and ``aifr db upgrade`` can
apply them all at once; a store also applies its own list when it opens, and refuses
a database whose version is newer than the code (``storage.schema_mismatch``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aifr.findings.ports import FINDINGS_SCHEMA_VERSION
from aifr.storage.postgres.approvals import PG_APPROVAL_MIGRATIONS
from aifr.storage.postgres.audit import AUDIT_SCHEMA_VERSION, PostgresAuditStore
from aifr.storage.postgres.circuits import PG_CIRCUIT_MIGRATIONS
from aifr.storage.postgres.database import PostgresDatabase
from aifr.storage.postgres.findings import PostgresFindingStore
from aifr.storage.postgres.grants import PG_GRANT_MIGRATIONS
from aifr.storage.postgres.idempotency import PG_IDEMPOTENCY_MIGRATIONS
from aifr.storage.postgres.rates import PG_RATE_MIGRATIONS
from aifr.storage.postgres.runs import PG_WORKFLOW_MIGRATIONS
from aifr.storage.postgres.tokens import PG_TOKEN_MIGRATIONS
from aifr.storage.sqlite.approvals import APPROVAL_MIGRATIONS
from aifr.storage.sqlite.audit import AUDIT_MIGRATIONS
from aifr.storage.sqlite.circuits import CIRCUIT_MIGRATIONS
from aifr.storage.sqlite.database import Migration, SqliteDatabase
from aifr.storage.sqlite.findings import FINDING_MIGRATIONS
from aifr.storage.sqlite.grants import GRANT_MIGRATIONS
from aifr.storage.sqlite.idempotency import IDEMPOTENCY_MIGRATIONS
from aifr.storage.sqlite.rates import RATE_MIGRATIONS
from aifr.storage.sqlite.runs import WORKFLOW_MIGRATIONS
from aifr.storage.sqlite.tokens import TOKEN_MIGRATIONS

__all__ = ["ComponentSchema", "schema_status", "upgrade_schema"]

_SQLITE: dict[str, Sequence[Migration]] = {
    "audit": AUDIT_MIGRATIONS,
    "workflows": WORKFLOW_MIGRATIONS,
    "approvals": APPROVAL_MIGRATIONS,
    "idempotency": IDEMPOTENCY_MIGRATIONS,
    "circuits": CIRCUIT_MIGRATIONS,
    "grants": GRANT_MIGRATIONS,
    "tokens": TOKEN_MIGRATIONS,
    "rates": RATE_MIGRATIONS,
    "findings": FINDING_MIGRATIONS,
}
_POSTGRES: dict[str, Sequence[Migration]] = {
    "workflows": PG_WORKFLOW_MIGRATIONS,
    "approvals": PG_APPROVAL_MIGRATIONS,
    "idempotency": PG_IDEMPOTENCY_MIGRATIONS,
    "circuits": PG_CIRCUIT_MIGRATIONS,
    "grants": PG_GRANT_MIGRATIONS,
    "tokens": PG_TOKEN_MIGRATIONS,
    "rates": PG_RATE_MIGRATIONS,
}


@dataclass(frozen=True, slots=True)
class ComponentSchema:
    """One component's recorded schema version against the newest this code knows."""

    component: str
    current: int
    latest: int

    @property
    def status(self) -> str:
        """``up to date``, ``pending`` (``aifr db upgrade`` applies it) or ``newer``."""
        if self.current == self.latest:
            return "up to date"
        return "pending" if self.current < self.latest else "newer"

    def to_dict(self) -> dict[str, str | int]:
        """The row as JSON."""
        return {
            "component": self.component,
            "current": self.current,
            "latest": self.latest,
            "status": self.status,
        }


def _latest(migrations: Sequence[Migration]) -> int:
    return max((m.version for m in migrations), default=0)


def schema_status(database: SqliteDatabase | PostgresDatabase) -> list[ComponentSchema]:
    """Every component's version in ``database`` (``0``: not created yet); only reads.

    Raises:
        StorageError: the database cannot be read.
    """
    if isinstance(database, SqliteDatabase):
        return [
            ComponentSchema(name, database.version(name), _latest(migrations))
            for name, migrations in _SQLITE.items()
        ]
    rows = [ComponentSchema("audit", database.version("audit"), AUDIT_SCHEMA_VERSION)]
    rows += [
        ComponentSchema(name, database.version(name), _latest(migrations))
        for name, migrations in _POSTGRES.items()
    ]
    return [
        *rows,
        ComponentSchema("findings", database.version("findings"), FINDINGS_SCHEMA_VERSION),
    ]


def upgrade_schema(database: SqliteDatabase | PostgresDatabase) -> list[ComponentSchema]:
    """Apply every pending migration of every component, in order; returns the new status.

    Raises:
        StorageError: a migration failed (that component keeps its previous version), or
            a component is newer than this code (``storage.schema_mismatch``).
    """
    if isinstance(database, SqliteDatabase):
        for name, migrations in _SQLITE.items():
            database.migrate(name, migrations)
    else:
        PostgresAuditStore(database.dsn, schema=database.schema).close()
        for name, migrations in _POSTGRES.items():
            database.migrate(name, migrations)
        PostgresFindingStore(database.dsn, schema=database.schema, migrate=True).close()
    return schema_status(database)
