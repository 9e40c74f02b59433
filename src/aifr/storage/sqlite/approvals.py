"""``SqliteApprovalStore``: approval requests in the state database.

Each state change runs in one ``BEGIN IMMEDIATE`` transaction that also appends its
audit record (``AuditLedger.append_in``), so two approvers or two executions racing on
one request serialize on the write lock and see each other's result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aifr.audit import AuditEvent, AuditLedger, AuditRecord
from aifr.errors import ApprovalError, ErrorCode
from aifr.invocation import (
    ApprovalRecord,
    ApprovalStatus,
    ApprovalUpdate,
    ApprovalVote,
)
from aifr.storage.sqlite.database import Migration, SqliteDatabase, translate_sqlite_errors

__all__ = ["APPROVAL_MIGRATIONS", "SqliteApprovalStore", "approval_body", "approval_from_row"]

APPROVAL_MIGRATIONS = [
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
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            body TEXT NOT NULL
        );
        CREATE INDEX approvals_digest ON approvals(request_digest, status);
        CREATE INDEX approvals_status ON approvals(status, created_at);
        """,
    )
]

_COLUMNS = "id, capability_id, capability_version, fingerprint, principal, request_digest, status, created_at, expires_at, body"


def approval_body(record: ApprovalRecord) -> str:
    """The JSON text of the fields without a column of their own (shared with PostgreSQL)."""
    return json.dumps(
        {
            "roles": list(record.roles),
            "inputs": record.inputs,
            "risk": record.risk,
            "rule_id": record.rule_id,
            "reason": record.reason,
            "approver_roles": list(record.approver_roles),
            "quorum": record.quorum,
            "quorum_roles": dict(record.quorum_roles),
            "votes": [
                {"approver": v.approver, "at": v.at, "comment": v.comment, "roles": list(v.roles)}
                for v in record.votes
            ],
            "decided_by": record.decided_by,
            "decided_at": record.decided_at,
            "decision_comment": record.decision_comment,
            "consumed_at": record.consumed_at,
            "consumed_by_request": record.consumed_by_request,
            "result": record.result,
            "request_id": record.request_id,
            "workflow_id": record.workflow_id,
            "on_behalf_of": list(record.on_behalf_of),
            "idempotency_key": record.idempotency_key,
        },
        sort_keys=True,
    )


def approval_from_row(row: Mapping[str, Any]) -> ApprovalRecord:
    """An approval from a row read by column name (shared with PostgreSQL)."""
    body: dict[str, Any] = json.loads(row["body"])
    return ApprovalRecord(
        id=row["id"],
        capability_id=row["capability_id"],
        capability_version=row["capability_version"],
        fingerprint=row["fingerprint"],
        principal=row["principal"],
        request_digest=row["request_digest"],
        status=ApprovalStatus(row["status"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        roles=tuple(body["roles"]),
        inputs=body["inputs"],
        risk=body["risk"],
        rule_id=body["rule_id"],
        reason=body["reason"],
        approver_roles=tuple(body["approver_roles"]),
        quorum=int(body["quorum"]),
        votes=tuple(
            ApprovalVote(v["approver"], v["at"], v.get("comment", ""), tuple(v.get("roles", ())))
            for v in body["votes"]
        ),
        quorum_roles=tuple(sorted(body.get("quorum_roles", {}).items())),
        decided_by=body["decided_by"],
        decided_at=body["decided_at"],
        decision_comment=body["decision_comment"],
        consumed_at=body["consumed_at"],
        consumed_by_request=body["consumed_by_request"],
        result=body["result"],
        request_id=body["request_id"],
        workflow_id=body["workflow_id"],
        on_behalf_of=tuple(body["on_behalf_of"]),
        idempotency_key=body.get("idempotency_key"),  # absent from requests made before it
    )


class SqliteApprovalStore:
    """The :class:`~aifr.invocation.ApprovalStore` port over the SQLite state database."""

    def __init__(self, database: SqliteDatabase, ledger: AuditLedger) -> None:
        self._db = database
        self._ledger = ledger
        database.migrate("approvals", APPROVAL_MIGRATIONS)

    def create(self, record: ApprovalRecord, audit: AuditEvent) -> AuditRecord:
        """Insert ``record`` and append its audit event in one transaction."""
        with self._db.transaction() as conn, translate_sqlite_errors("creating an approval"):
            conn.execute(
                f"INSERT INTO approvals ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608  # fixed column list
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

    def get(self, approval_id: str) -> ApprovalRecord | None:
        """The request with that id, or ``None``."""
        with translate_sqlite_errors("reading an approval"):
            row = (
                self._db.connect()
                .execute(
                    f"SELECT {_COLUMNS} FROM approvals WHERE id = ?",  # noqa: S608  # fixed column list
                    (approval_id,),
                )
                .fetchone()
            )
        return approval_from_row(row) if row is not None else None

    def find_open(
        self, request_digest: str, now: float, idempotency_key: str | None = None
    ) -> ApprovalRecord | None:
        """The newest pending, unexpired request for this digest and idempotency key."""
        with translate_sqlite_errors("reading approvals"):
            row = (
                self._db.connect()
                .execute(
                    f"SELECT {_COLUMNS} FROM approvals WHERE request_digest = ? AND status = ? "  # noqa: S608  # fixed column list
                    "AND expires_at > ? AND json_extract(body, '$.idempotency_key') IS ? "
                    "ORDER BY created_at DESC LIMIT 1",
                    (request_digest, ApprovalStatus.PENDING.value, now, idempotency_key),
                )
                .fetchone()
            )
        return approval_from_row(row) if row is not None else None

    def list(
        self, *, status: ApprovalStatus | None = None, limit: int = 100
    ) -> list[ApprovalRecord]:
        """Requests, newest first."""
        with translate_sqlite_errors("listing approvals"):
            conn = self._db.connect()
            if status is None:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM approvals ORDER BY created_at DESC LIMIT ?",  # noqa: S608  # fixed column list
                    (limit,),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM approvals WHERE status = ? "  # noqa: S608  # fixed column list
                    "ORDER BY created_at DESC LIMIT ?",
                    (status.value, limit),
                ).fetchall()
        return [approval_from_row(r) for r in rows]

    def update(
        self, approval_id: str, change: ApprovalUpdate
    ) -> tuple[ApprovalRecord, AuditRecord | None]:
        """Read, apply ``change``, write and append its audit event, all in one transaction.

        Raises:
            ApprovalError: ``approval.not_found``, or what ``change`` raises.
        """
        with self._db.transaction() as conn:
            with translate_sqlite_errors("reading an approval"):
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM approvals WHERE id = ?",  # noqa: S608  # fixed column list
                    (approval_id,),
                ).fetchone()
            if row is None:
                raise ApprovalError(
                    f"no approval request {approval_id!r}",
                    code=ErrorCode.APPROVAL_NOT_FOUND,
                    approval_id=approval_id,
                )
            updated, audit = change(approval_from_row(row))
            with translate_sqlite_errors("updating an approval"):
                conn.execute(
                    "UPDATE approvals SET status = ?, body = ? WHERE id = ?",
                    (updated.status.value, approval_body(updated), approval_id),
                )
            audit_record = self._ledger.append_in(conn, audit) if audit is not None else None
        return updated, audit_record
