"""Lifecycle events for a run's drive and its steps, which the tracer makes spans of.

A run outlives processes (it pauses for an approval and a worker resumes it), so its
trace id is derived from the run id: every drive of the run, every step and every
invocation a step makes (their audit records included) share one trace, in whichever
process they ran. The events are built only while someone listens on the runtime's
event bus; the trace id is always passed, so the audit records agree either way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from aifr.audit import random_hex
from aifr.invocation import LifecycleEvent, Runtime
from aifr.workflows.ports import StepRecord
from aifr.workflows.state import RunContext

__all__ = ["drive_span", "run_trace_id", "step_span"]


def run_trace_id(run_id: str) -> str:
    """The trace id of every drive, step and invocation of run ``run_id`` (32 hex)."""
    return hashlib.sha256(f"aifr-run:{run_id}".encode()).hexdigest()[:32]


def _span_id() -> str:
    return random_hex(8)


@contextmanager
def drive_span(runtime: Runtime, context: RunContext) -> Iterator[None]:
    """Announce one drive of a run (``workflow.run.started`` / ``finished``) around it."""
    if not runtime.events.has_observers:
        yield
        return
    run = context.run
    context.span_id = _span_id()
    common = {"trace_id": run_trace_id(run.id), "span_id": context.span_id}
    runtime.events.emit(
        LifecycleEvent(
            "workflow.run.started",
            run.id,
            run.workflow,
            details={**common, "workflow": run.workflow, "run_id": run.id},
        )
    )
    try:
        yield
    finally:
        runtime.events.emit(
            LifecycleEvent(
                "workflow.run.finished",
                run.id,
                run.workflow,
                details={**common, "state": context.run.state.value},
            )
        )
        context.span_id = None


@contextmanager
def step_span(runtime: Runtime, context: RunContext, record: StepRecord) -> Iterator[str | None]:
    """Announce one attempt of a step around it; yields the span its invocation joins."""
    if not runtime.events.has_observers or context.span_id is None:
        yield None
        return
    run, span_id = context.run, _span_id()
    common = {"trace_id": run_trace_id(run.id), "span_id": span_id}
    runtime.events.emit(
        LifecycleEvent(
            "workflow.step.started",
            run.id,
            record.capability,
            details={
                **common,
                "parent_span_id": context.span_id,
                "run_id": run.id,
                "step_id": record.step_id,
                "attempt": record.attempt,
            },
        )
    )
    try:
        yield span_id
    finally:
        step = context.steps.get(record.step_id, record)
        runtime.events.emit(
            LifecycleEvent(
                "workflow.step.finished",
                run.id,
                record.capability,
                details={**common, "state": step.state.value},
            )
        )
