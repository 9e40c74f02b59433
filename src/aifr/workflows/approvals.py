"""A step waiting for a human: settling its approval, and the webhook that announces it.

The engine enforces approval expiry itself: reading a request through
``ApprovalService.get`` marks it expired once overdue, and an expired request fails the
step like a rejection, whether or not any notification was ever delivered.
"""

from __future__ import annotations

from collections.abc import Callable

from aifr.errors import AifrError, ApprovalError, ErrorCode, WorkflowError
from aifr.invocation import ApprovalService, ApprovalStatus, Result
from aifr.workflows.ports import Notification, RunState, StepRecord
from aifr.workflows.state import RunContext, error_dict, released_lease

__all__ = ["Fail", "Settled", "approval_notice", "settle_approval", "withdraw_waiting"]

Fail = Callable[[RunContext, StepRecord, AifrError], bool]
"""Fails a step (and starts compensation or halts, by the workflow's rule)."""
Settled = Callable[[RunContext, StepRecord, Result], None]
"""Records the result of a step's approved execution."""


def settle_approval(
    context: RunContext,
    record: StepRecord,
    approvals: ApprovalService | None,
    fail: Fail,
    settled: Settled,
) -> str | None:
    """The approval id to execute ``record`` with, or ``None`` when it must not run now.

    Pending: the run keeps waiting. Approved: the resume is committed (audited as
    ``workflow.approved`` by the approver) and the id returned. Consumed with a stored
    result (the process died after executing, or someone ran ``aifr approvals
    execute``): ``settled`` records that result, the run leaving its pause first.
    Rejected or expired: the step fails through ``fail`` and the run is compensated.
    Consumed without a result: the run needs review, since the effect may have happened.
    """
    approval_id = record.approval_id
    if approvals is None or approval_id is None:
        fail(context, record, WorkflowError("the runtime has no approval service"))
        return None
    try:
        approval = approvals.get(approval_id)
    except ApprovalError as exc:
        fail(context, record, exc)
        return None
    status = approval.status
    if status is ApprovalStatus.PENDING:
        return None
    if status is ApprovalStatus.APPROVED:
        context.commit(
            "approved",
            state=RunState.RUNNING,
            steps=[record],
            actor=approval.decided_by,
            details={"approval_id": approval_id},
        )
        return approval_id
    if status is ApprovalStatus.CONSUMED and approval.result is not None:
        if context.run.state is RunState.WAITING_APPROVAL:
            # Executed outside the run ('aifr approvals execute'): the run is still
            # paused, and must leave the pause as an approval run here would.
            context.commit(
                "approved",
                state=RunState.RUNNING,
                steps=[record],
                actor=approval.decided_by,
                details={"approval_id": approval_id, "executed_outside_run": True},
            )
        settled(context, record, Result.from_dict(approval.result))
        return None
    code = {
        ApprovalStatus.REJECTED: ErrorCode.APPROVAL_REJECTED,
        ApprovalStatus.EXPIRED: ErrorCode.APPROVAL_EXPIRED,
        ApprovalStatus.WITHDRAWN: ErrorCode.APPROVAL_WITHDRAWN,
    }.get(status)
    if code is None:  # consumed without a result: the process died mid-execution
        context.commit(
            "needs_review",
            state=RunState.NEEDS_REVIEW,
            steps=[record],
            outcome=ErrorCode.APPROVAL_CONSUMED.value,
            error=error_dict(
                ApprovalError(
                    f"step {record.step_id}: approval {approval_id} was consumed but no "
                    "result was recorded; check the effect, then cancel the run",
                    code=ErrorCode.APPROVAL_CONSUMED,
                    approval_id=approval_id,
                )
            ),
            failed_step=record.step_id,
            **released_lease(),
        )
        return None
    by = f" by {approval.decided_by}" if approval.decided_by else ""
    fail(
        context,
        record,
        ApprovalError(
            f"step {record.step_id}: approval {approval_id} was {status.value}{by}",
            code=code,
            approval_id=approval_id,
        ),
    )
    return None


def approval_notice(
    context: RunContext, record: StepRecord, result: Result, url: str | None
) -> Notification | None:
    """The ``approval.requested`` webhook for a paused step (``None`` without a URL)."""
    if url is None:
        return None
    run = context.run
    decision = result.decision
    return Notification(
        kind="approval.requested",
        url=url,
        body={
            "type": "approval.requested",
            "approval_id": result.approval_id,
            "run_id": run.id,
            "workflow": run.workflow,
            "step_id": record.step_id,
            "capability_id": result.capability_id,
            "principal": run.principal,
            "rule_id": decision.rule_id if decision is not None else None,
            "reason": decision.reason if decision is not None else "",
            "approver_roles": list(decision.approver_roles) if decision is not None else [],
        },
    )


def withdraw_waiting(
    context: RunContext, approvals: ApprovalService | None, operator: str
) -> list[str]:
    """Withdraw the approvals a cancelled run's steps wait on; returns their ids.

    Left pending, a cancelled run's request could still be approved and then run with
    ``aifr approvals execute``: an effect of a run its operator stopped. A request that
    was already decided, used or expired is left as it is.
    """
    if approvals is None:
        return []
    withdrawn = []
    reason = f"workflow run {context.run.id} was cancelled"
    for step in context.steps.values():
        for approval_id in (step.approval_id, step.undo_approval_id):
            if approval_id is None:
                continue
            try:
                approvals.withdraw(approval_id, operator, reason=reason)
            except ApprovalError:
                continue
            withdrawn.append(approval_id)
    return withdrawn
