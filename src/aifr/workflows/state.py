"""One run in memory while a worker holds its lease, and the one way its state changes.

:class:`RunContext` keeps the run, its definition and its steps. :meth:`RunContext.commit`
writes a change through the store together with the audit event that tells it (and
the notification, if any) in one transaction, and only then updates the in-memory
copy: what the engine acts on next is always what is on disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue

from aifr.audit import AuditEvent
from aifr.errors import AifrError
from aifr.invocation import CallOptions, Result, Runtime
from aifr.observability.traceparent import format_traceparent
from aifr.workflows.ports import (
    Completion,
    Notification,
    RunFinish,
    RunRecord,
    RunState,
    RunStore,
    StepRecord,
)
from aifr.workflows.spec import StepSpec, WorkflowSpec

__all__ = ["RunContext", "error_dict", "queued_steps", "released_lease", "workflow_event"]

_LEASE_MARGIN_S = 1.0
"""How long before its known expiry a lease stops counting as certainly held."""


def error_dict(error: AifrError) -> dict[str, JsonValue]:
    """The JSON form of an error kept on a run or step: code, message, details."""
    return {"code": error.code.value, "message": error.message, "details": error.details}


def queued_steps(
    run_id: str, spec: WorkflowSpec, fingerprints: Mapping[str, str]
) -> list[StepRecord]:
    """A new run's steps as it is created: each pending on its first attempt, nothing done.

    The one place they are made: :meth:`WorkflowEngine.start` stores them, and a store
    whose claim starts a queued run (PostgreSQL's) builds them again from the run's own
    definition and ``fingerprints`` (those it started with) instead of reading the rows
    back. Nothing can have written them since: no step of a run is driven while it is
    ``pending`` (the engine sets it running first, and no change sets a run pending
    again), and the claim starts only a pending run.
    """
    return [
        StepRecord(
            run_id=run_id,
            step_id=step.id,
            index=index,
            capability=step.capability,
            fingerprint=fingerprints.get(step.id),
        )
        for index, step in enumerate(spec.steps)
    ]


def released_lease() -> dict[str, Any]:
    """Run changes that give the lease back in the same commit (a pause or an end)."""
    return {"lease_owner": None, "lease_expires_at": None}


def workflow_event(
    kind: str,
    run: RunRecord,
    *,
    actor: str | None = None,
    step: StepRecord | None = None,
    outcome: str = "ok",
    **details: JsonValue,
) -> AuditEvent:
    """An audit event about ``run`` (``workflow.<kind>``), by ``actor`` or its principal."""
    facts: dict[str, JsonValue] = {
        "workflow": run.workflow,
        "workflow_version": run.workflow_version,
        "state": run.state.value,
    }
    if step is not None:
        facts["step_id"] = step.step_id
        facts["step_state"] = step.state.value
    facts.update(details)
    return AuditEvent(
        kind=f"workflow.{kind}",
        principal=actor or run.principal,
        capability_id=step.capability.partition("@")[0] if step is not None else None,
        capability_fingerprint=step.fingerprint if step is not None else None,
        outcome=outcome,
        run_id=run.id,
        details=facts,
    )


@dataclass
class RunContext:
    """A leased run: record, definition and steps, kept equal to what is stored."""

    run: RunRecord
    spec: WorkflowSpec
    steps: dict[str, StepRecord]
    store: RunStore
    owner: str
    clock: Callable[[], float] = time.time
    cancelled: bool = False
    cancel_checked_at: float = 0.0
    events: list[str] = field(default_factory=list)
    span_id: str | None = None
    trace_id: str | None = None
    """The run's trace id once a step computed it (derived from the run id alone)."""

    @classmethod
    def load(
        cls, run: RunRecord, store: RunStore, owner: str, clock: Callable[[], float]
    ) -> RunContext:
        """The context of a run read back from the store."""
        spec = WorkflowSpec.from_snapshot(run.definition)
        return cls(
            run=run,
            spec=spec,
            steps={s.step_id: s for s in store.steps(run.id)},
            store=store,
            owner=owner,
            clock=clock,
        )

    def ordered(self) -> list[StepRecord]:
        """Steps in definition order (``steps`` is filled in that order, and kept so)."""
        return list(self.steps.values())

    def step_spec(self, step_id: str) -> StepSpec:
        """The definition of one step."""
        return self.spec.step(step_id)

    def template_context(self, **extra: Any) -> dict[str, Any]:
        """What step templates see: ``inputs``, ``steps``, ``run`` and ``extra``."""
        return {
            "inputs": self.run.inputs,
            "steps": {
                s.step_id: {"output": s.output, "state": s.state.value}
                for s in self.steps.values()
                if s.state.value in ("completed", "compensated", "compensation_failed")
            },
            "run": {
                "id": self.run.id,
                "workflow": self.run.workflow,
                "principal": self.run.principal,
            },
            **extra,
        }

    def lease_is_safe(self) -> bool:
        """Whether this worker's lease certainly still stands (nobody can have taken it).

        The expiry known here is the one the lease was taken with: renewals only push
        the stored one later, so before it (less a margin) no other worker can hold the
        run, and nothing about it can have changed but through this context.
        """
        run = self.run
        expires = run.lease_expires_at
        return (
            run.lease_owner == self.owner
            and expires is not None
            and self.clock() < expires - _LEASE_MARGIN_S
        )

    def invoke(
        self,
        runtime: Runtime,
        capability: str,
        inputs: dict[str, JsonValue],
        *,
        step_id: str,
        key: str,
        approval_id: str | None,
        timeout_s: float | None = None,
        finish: RunFinish | None = None,
        trace_id: str | None = None,
        parent_span_id: str | None = None,
    ) -> tuple[Result, Completion | None]:
        """Invoke one attempt of a step (or of its undo) as the run's principal.

        Tells the store what this lease holder knows of the attempt first (see
        ``RunStore.begin_attempt``); returns the result and how the store recorded its
        success (``None`` when it did not). The call joins the run's trace
        (``trace_id``), under the step's span when it is traced (``parent_span_id``).
        """
        run = self.run
        self.store.begin_attempt(key, unrecorded=self.lease_is_safe(), finish=finish)
        try:
            result = runtime.invoke(
                capability,
                inputs,
                run.principal,
                CallOptions(
                    roles=run.roles,
                    idempotency_key=key,
                    approval_id=approval_id,
                    workflow_id=run.workflow,
                    run_id=run.id,
                    step_id=step_id,
                    timeout_s=timeout_s,
                    trace_id=trace_id,
                    traceparent=(
                        format_traceparent(trace_id, parent_span_id)
                        if trace_id is not None and parent_span_id is not None
                        else None
                    ),
                ),
            )
        finally:
            completion = self.store.consume_completion(key)
        return result, completion

    def adopt(self, run: RunRecord, kind: str) -> None:
        """Take ``run`` as the run's state after the store already wrote it (event ``kind``)."""
        self.run = run
        self.events.append(kind)

    def remember(self, step: StepRecord) -> None:
        """Update the in-memory step after the store already holds it."""
        self.steps[step.step_id] = step

    def commit(
        self,
        kind: str | None,
        *,
        state: RunState | None = None,
        steps: Sequence[StepRecord] = (),
        actor: str | None = None,
        outcome: str = "ok",
        notification: Notification | None = None,
        details: dict[str, JsonValue] | None = None,
        **changes: Any,
    ) -> RunRecord:
        """Write the run (``state`` and ``changes``), ``steps`` and the audit event at once.

        Raises:
            WorkflowError: ``workflow.lease_lost`` when another worker took the run.
            StorageError: the database failed; nothing of the change is kept.
        """
        run = self.run.evolve(
            state=state if state is not None else self.run.state,
            updated_at=self.clock(),
            **changes,
        )
        step = steps[0] if len(steps) == 1 else None
        event = (
            workflow_event(kind, run, actor=actor, step=step, outcome=outcome, **(details or {}))
            if kind is not None
            else None
        )
        self.store.save(run, steps, event, notification, owner=self.owner)
        self.run = run
        for s in steps:
            self.steps[s.step_id] = s
        if kind is not None:
            self.events.append(kind)
        return run
