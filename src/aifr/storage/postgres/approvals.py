"""``PostgresApprovalStore``: approval requests in PostgreSQL.

Each state change is one transaction that locks the request's row (``SELECT ... FOR
UPDATE``), applies the change and appends its audit record last (the audit chain's lock
is taken there, once, as by every writer), so two approvers or two executions racing on
one request, on any machine, serialize and see each other's result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aifr.audit import AuditEvent, AuditLedger, AuditRecord
from aifr.errors import ApprovalError, ErrorCode
from aifr.invocation import ApprovalRecord, ApprovalStatus, ApprovalUpdate
from aifr.storage.postgres.database import PostgresDatabase, translate_pg_errors
from aifr.storage.sqlite.approvals import approval_body, approval_from_row
from aifr.storage.sqlite.database import Migration

if TYPE_CHECKING:
    import psycopg

__all__ = ["PG_APPROVAL_MIGRATIONS", "PostgresApprovalStore"]

PG_APPROVAL_MIGRATIONS = [
    Migration(
        1,
        """
        CREATE TABLE approvals (
            id TEXT PRIMARY KEY,
            capability_id TEXT NOT NULL,
            capability_version TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            principal TEXT NOT NULL,
            request_digest TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            body TEXT NOT NULL
        );
        CREATE INDEX approvals_digest ON approvals (request_digest, status);
        CREATE INDEX approvals_status ON approvals (status, created_at)
        """,
    )
]

_NAMES = (
    "id",
    "capability_id",
    "capability_version",
    "fingerprint",
    "principal",
    "request_digest",
    "status",
    "created_at",
    "expires_at",
    "body",
)
_COLUMNS = ", ".join(_NAMES)


def _record(row: Sequence[Any]) -> ApprovalRecord:
    return approval_from_row(dict(zip(_NAMES, row, strict=True)))


class PostgresApprovalStore:
    """The :class:`~aifr.invocation.ApprovalStore` port over PostgreSQL."""

    def __init__(self, database: PostgresDatabase, ledger: AuditLedger) -> None:
        self._db = database
        self._ledger = ledger
        database.migrate("approvals", PG_APPROVAL_MIGRATIONS)

    def create(self, record: ApprovalRecord, audit: AuditEvent) -> AuditRecord:
        """Insert ``record`` and append its audit event in one transaction."""

        def create_in(conn: psycopg.Connection[tuple[Any, ...]]) -> AuditRecord:
            conn.execute(
                f"INSERT INTO approvals ({_COLUMNS}) "  # noqa: S608  # fixed column list
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    record.id,
                    record.capability_id,
                    record.capability_version,
                    record.fingerprint,
                    record.principal,
                    record.request_digest,
                    record.status.value,
                    record.created_at,
                    record.expires_at,
                    approval_body(record),
                ),
            )
            return self._ledger.append_in(conn, audit)

        return self._db.write("creating an approval", create_in)

    def get(self, approval_id: str) -> ApprovalRecord | None:
        """The request with that id, or ``None``."""
        with translate_pg_errors("reading an approval"), self._db.connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE id = %s",  # noqa: S608  # fixed column list
                (approval_id,),
            ).fetchone()
        return _record(row) if row is not None else None

    def find_open(
        self, request_digest: str, now: float, idempotency_key: str | None = None
    ) -> ApprovalRecord | None:
        """The newest pending, unexpired request for this digest and idempotency key."""
        with translate_pg_errors("reading approvals"), self._db.connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE request_digest = %s AND status = %s "  # noqa: S608  # fixed column list
                "AND expires_at > %s "
                "AND (body::jsonb ->> 'idempotency_key') IS NOT DISTINCT FROM %s "
                "ORDER BY created_at DESC LIMIT 1",
                (request_digest, ApprovalStatus.PENDING.value, now, idempotency_key),
            ).fetchone()
        return _record(row) if row is not None else None

    def list(
        self, *, status: ApprovalStatus | None = None, limit: int = 100
    ) -> list[ApprovalRecord]:
        """Requests, newest first."""
        value = status.value if status is not None else None
        with translate_pg_errors("listing approvals"), self._db.connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE (%s::text IS NULL OR status = %s) "  # noqa: S608  # fixed column list
                "ORDER BY created_at DESC LIMIT %s",
                (value, value, limit),
            ).fetchall()
        return [_record(r) for r in rows]

    def update(
        self, approval_id: str, change: ApprovalUpdate
    ) -> tuple[ApprovalRecord, AuditRecord | None]:
        """Lock, read, apply ``change``, write and append its audit event, in one transaction.

        Raises:
            ApprovalError: ``approval.not_found``, or what ``change`` raises.
        """

        def update_in(
            conn: psycopg.Connection[tuple[Any, ...]],
        ) -> tuple[ApprovalRecord, AuditRecord | None]:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE id = %s FOR UPDATE",  # noqa: S608  # fixed column list
                (approval_id,),
            ).fetchone()
            if row is None:
                raise ApprovalError(
                    f"no approval request {approval_id!r}",
                    code=ErrorCode.APPROVAL_NOT_FOUND,
                    approval_id=approval_id,
                )
            updated, audit = change(_record(row))
            conn.execute(
                "UPDATE approvals SET status = %s, body = %s WHERE id = %s",
                (updated.status.value, approval_body(updated), approval_id),
            )
            record = self._ledger.append_in(conn, audit) if audit is not None else None
            return updated, record

        return self._db.write("updating an approval", update_in)
