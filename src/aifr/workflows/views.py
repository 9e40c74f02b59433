"""What callers see of runs and plans: :class:`RunView` and :class:`PlannedStep`."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import JsonValue

from aifr.errors import WorkflowError
from aifr.workflows.ports import RunRecord, RunState, StepRecord

__all__ = ["PlannedStep", "RunView"]


@dataclass(frozen=True, slots=True)
class RunView:
    """A run and its steps as stored, for the CLI, the API and tests."""

    run: RunRecord
    steps: list[StepRecord]

    @property
    def state(self) -> RunState:
        """The run's state."""
        return self.run.state

    def step(self, step_id: str) -> StepRecord:
        """One step by id.

        Raises:
            WorkflowError: no such step.
        """
        for step in self.steps:
            if step.step_id == step_id:
                return step
        raise WorkflowError(f"run {self.run.id} has no step {step_id!r}", step_id=step_id)

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON form."""
        run = self.run
        return {
            "id": run.id,
            "workflow": run.workflow,
            "workflow_version": run.workflow_version,
            "state": run.state.value,
            "principal": run.principal,
            "inputs": run.inputs,
            "error": run.error,
            "failed_step": run.failed_step,
            "created_at": run.created_at,
            "updated_at": run.updated_at,
            "steps": [
                {
                    "id": s.step_id,
                    "capability": s.capability,
                    "state": s.state.value,
                    "attempt": s.attempt,
                    "output": s.output,
                    "error": s.error,
                    "approval_id": s.approval_id,
                    "undo_capability": s.undo_capability,
                    "undo_error": s.undo_error,
                }
                for s in self.steps
            ],
        }


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """What a step would do for a principal, decided before anything executes."""

    step_id: str
    capability: str
    version: str | None
    operation: str | None
    risk: str | None
    decision: str | None
    rule_id: str | None
    reason: str
    compensation: str | None
