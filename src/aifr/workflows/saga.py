"""Compensation: undo a run's completed steps in reverse order, through the runtime.

By the compensation convention (docs/architecture.md), a completed step is undone by
invoking its capability's ``compensation.capability_id`` with ``output["undo"]``,
unless the workflow step overrides it (another capability with templated inputs, or
``none: true``). A step that changed nothing (a READ, or no side effects) needs no
undo. A side-effecting step with no declared compensation is irreversible: it is
recorded as not compensated, in the audit ledger, and the saga goes on.

Each compensation is a governed invocation with its own idempotency key (run, step,
``undo``, attempt), so one interrupted by a crash is re-run with the same key. When one
fails (or is denied, or needs an approval), the run stops in ``compensation_failed``
naming the step; ``aifr runs retry-compensation RUN`` continues from that step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import JsonValue

from aifr.capabilities import OperationType
from aifr.errors import AifrError, ErrorCode, WorkflowError
from aifr.invocation import ApprovalStatus, Result, Runtime, Status
from aifr.workflows.ports import RunState, StepKey, StepRecord, StepState
from aifr.workflows.state import RunContext, error_dict
from aifr.workflows.templating import render_inputs

__all__ = ["Saga", "UndoPlan"]

_UNDONE_STATES = (StepState.COMPLETED, StepState.COMPENSATION_FAILED)


@dataclass(frozen=True, slots=True)
class UndoPlan:
    """How one step is undone: a capability and its inputs, or why nothing is needed."""

    capability: str | None
    inputs: dict[str, JsonValue]
    reason: str = ""


class Saga:
    """Runs the compensation of one leased run to its end or its first failure."""

    def __init__(self, runtime: Runtime, clock: Callable[[], float]) -> None:
        self._runtime = runtime
        self._clock = clock

    def compensate(self, context: RunContext) -> None:
        """Undo completed steps newest first; ends compensated, cancelled or compensation_failed."""
        for record in reversed(context.ordered()):
            if record.state not in _UNDONE_STATES:
                continue
            try:
                plan = self.plan(context, record)
            except WorkflowError as exc:
                self._failed(context, record, exc, None)
                return
            if plan.capability is None:
                context.commit(
                    "step_not_compensated",
                    steps=[record.evolve(state=StepState.NOT_COMPENSATED)],
                    details={"reason": plan.reason},
                )
                continue
            if not self._undo(context, record, plan):
                return
        final = RunState.CANCELLED if context.cancelled else RunState.COMPENSATED
        context.commit(
            "cancelled" if context.cancelled else "compensated",
            state=final,
            lease_owner=None,
            lease_expires_at=None,
        )

    def plan(self, context: RunContext, record: StepRecord) -> UndoPlan:
        """The undo of one completed step.

        Raises:
            WorkflowError: the override's template fails, or a compensable capability
                returned no ``undo`` inputs.
        """
        override = context.step_spec(record.step_id).compensation
        if override is not None:
            if override.none:
                return UndoPlan(None, {}, "the workflow declares no compensation")
            return UndoPlan(
                override.capability,
                render_inputs(
                    override.inputs,
                    context.template_context(output=record.output),
                    where=f"steps.{record.step_id}.compensation.inputs",
                ),
            )
        spec = self._runtime.registry.get(record.capability)
        if spec is None:
            raise WorkflowError(
                f"step {record.step_id}: capability {record.capability} is no longer "
                "registered; its compensation is unknown",
                code=ErrorCode.WORKFLOW_COMPENSATION_FAILED,
                step_id=record.step_id,
            )
        undo_id = spec.compensation.capability_id
        if undo_id is not None:
            output = record.output
            undo = output.get("undo") if isinstance(output, dict) else None
            if not isinstance(undo, dict):
                raise WorkflowError(
                    f"step {record.step_id}: {spec.id} declares compensation {undo_id} but "
                    "its output has no 'undo' object",
                    code=ErrorCode.WORKFLOW_COMPENSATION_FAILED,
                    step_id=record.step_id,
                )
            return UndoPlan(undo_id, undo)
        if spec.operation_type is OperationType.READ or spec.side_effects.scope == "none":
            return UndoPlan(None, {}, "the step changed nothing")
        return UndoPlan(None, {}, f"{spec.id} is irreversible and declares no compensation")

    def _undo(self, context: RunContext, record: StepRecord, plan: UndoPlan) -> bool:
        run = context.run
        assert plan.capability is not None  # noqa: S101  # callers check
        approval_id = self._decided_approval(record)
        result, completion = context.invoke(
            self._runtime,
            plan.capability,
            plan.inputs,
            step_id=record.step_id,
            key=str(StepKey(run.id, record.step_id, record.undo_attempt, True)),
            approval_id=approval_id,
        )
        if result.status is Status.OK:
            done = record.evolve(
                state=StepState.COMPENSATED,
                undo_capability=plan.capability,
                undo_output=result.output,
                undo_error=None,
            )
            if completion is not None or _is_stored(context, record, result):
                context.remember(done)
            else:
                context.commit("step_compensated", steps=[done])
            return True
        error = result.error or WorkflowError(f"compensation of {record.step_id} failed")
        self._failed(context, record.evolve(undo_capability=plan.capability), error, result)
        return False

    def _decided_approval(self, record: StepRecord) -> str | None:
        approvals = self._runtime.approvals
        if record.undo_approval_id is None or approvals is None:
            return None
        try:
            status = approvals.get(record.undo_approval_id).status
        except AifrError:
            return None
        return record.undo_approval_id if status is ApprovalStatus.APPROVED else None

    def _failed(
        self,
        context: RunContext,
        record: StepRecord,
        error: AifrError,
        result: Result | None,
    ) -> None:
        pending = result is not None and result.status is Status.PENDING_APPROVAL
        failed = record.evolve(
            state=StepState.COMPENSATION_FAILED,
            undo_error=error_dict(error),
            undo_attempt=record.undo_attempt if pending else record.undo_attempt + 1,
            undo_approval_id=result.approval_id if pending and result is not None else None,
        )
        context.commit(
            "compensation_failed",
            state=RunState.COMPENSATION_FAILED,
            steps=[failed],
            outcome=error.code.value,
            failed_step=record.step_id,
            error=error_dict(
                WorkflowError(
                    f"compensation of step {record.step_id} failed: {error.message}",
                    code=ErrorCode.WORKFLOW_COMPENSATION_FAILED,
                    step_id=record.step_id,
                    cause=error.code.value,
                )
            ),
            lease_owner=None,
            lease_expires_at=None,
        )


def _is_stored(context: RunContext, record: StepRecord, result: Result) -> bool:
    if not result.replayed:
        return False
    stored = context.store.step(context.run.id, record.step_id)
    return stored is not None and stored.state is StepState.COMPENSATED
