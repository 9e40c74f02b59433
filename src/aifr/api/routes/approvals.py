"""``/v1/approvals``: the approvals inbox, and decisions made as the token's principal.

The approver is always the authenticated caller, never a name in the body: a token for
``bob`` decides as ``bob``, with the token's roles added to those the policy binds. The
requester never decides on their own request (``approval.self_approval``, 403). The
signed callback that ``aifr worker --callback-port`` takes is served on the same
resource, ``POST /v1/approvals/{id}/decision``, authenticated by its HMAC signature.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from aifr.api.auth import authorize
from aifr.api.problems import ERROR_RESPONSES
from aifr.api.routes.deps import BEARER, AppDep, CallerDep
from aifr.audit import redact_details
from aifr.invocation import ApprovalRecord, ApprovalStatus, missing_for

__all__ = ["ApprovalView", "Decision", "approval_view", "router"]

router = APIRouter(
    prefix="/v1/approvals", tags=["approvals"], responses=ERROR_RESPONSES, dependencies=BEARER
)

ApprovalId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_\-]{1,100}$")]


class Vote(BaseModel):
    """One approver's yes."""

    approver: str
    at: float
    comment: str


class ApprovalView(BaseModel):
    """An approval request as the inbox shows it (inputs with secrets redacted)."""

    id: str
    status: str
    capability_id: str
    capability_version: str | None
    principal: str
    inputs: dict[str, JsonValue]
    risk: str
    rule_id: str | None
    reason: str
    approver_roles: list[str]
    quorum: int
    quorum_roles: dict[str, int]
    missing_votes: dict[str, int]
    """Votes still needed per role (``*``: from any approver); empty unless pending."""
    votes: list[Vote]
    created_at: float
    expires_at: float
    decided_by: str | None
    decided_at: float | None
    decision_comment: str


class Decision(BaseModel):
    """An approver's note on a decision."""

    model_config = ConfigDict(extra="forbid")

    comment: str = Field(default="", max_length=2000)


def approval_view(record: ApprovalRecord) -> ApprovalView:
    """The inbox view of a record (inputs redacted)."""
    return ApprovalView(
        id=record.id,
        status=record.status.value,
        capability_id=record.capability_id,
        capability_version=record.capability_version,
        principal=record.principal,
        inputs=dict(redact_details(record.inputs)),
        risk=record.risk,
        rule_id=record.rule_id,
        reason=record.reason,
        approver_roles=list(record.approver_roles),
        quorum=record.quorum,
        quorum_roles=dict(record.quorum_roles),
        missing_votes=missing_for(record) if record.status is ApprovalStatus.PENDING else {},
        votes=[Vote(approver=v.approver, at=v.at, comment=v.comment) for v in record.votes],
        created_at=record.created_at,
        expires_at=record.expires_at,
        decided_by=record.decided_by,
        decided_at=record.decided_at,
        decision_comment=record.decision_comment,
    )


@router.get("", response_model=list[ApprovalView])
async def list_approvals(
    app: AppDep,
    who: CallerDep,
    status: Annotated[ApprovalStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ApprovalView]:
    """Approval requests, newest first (``status=pending`` for the inbox)."""
    authorize(app.policy, who, "api.approvals.read")
    records = await anyio.to_thread.run_sync(lambda: app.approvals.list(status=status, limit=limit))
    return [approval_view(r) for r in records]


@router.get("/{approval_id}", response_model=ApprovalView)
async def show_approval(approval_id: ApprovalId, app: AppDep, who: CallerDep) -> ApprovalView:
    """One approval request."""
    authorize(app.policy, who, "api.approvals.read")
    return approval_view(await app.approvals.aget(approval_id))


@router.post("/{approval_id}/approve", response_model=ApprovalView)
async def approve(
    approval_id: ApprovalId,
    app: AppDep,
    who: CallerDep,
    decision: Annotated[Decision, Body()] = Decision(),  # noqa: B008  # FastAPI's default body
) -> ApprovalView:
    """Approve as the token's principal (403 for self-approval or an approver the rules refuse)."""
    record = await app.approvals.aapprove(
        approval_id, who.principal, comment=decision.comment, roles=who.roles, authenticated=True
    )
    return approval_view(record)


@router.post("/{approval_id}/reject", response_model=ApprovalView)
async def reject(
    approval_id: ApprovalId,
    app: AppDep,
    who: CallerDep,
    decision: Annotated[Decision, Body()] = Decision(),  # noqa: B008  # FastAPI's default body
) -> ApprovalView:
    """Reject as the token's principal (the same rules as approving)."""
    record = await app.approvals.areject(
        approval_id, who.principal, reason=decision.comment, roles=who.roles, authenticated=True
    )
    return approval_view(record)
