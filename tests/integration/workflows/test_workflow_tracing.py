"""Workflow runs and steps as spans: one trace per run, each step's invocation under its step."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from wf_env import WfEnv

from aifr.observability.tracing import InvocationTracer, build_tracer_provider
from aifr.workflows import RunState, WorkflowBuilder
from aifr.workflows.spans import run_trace_id


@pytest.fixture
def spans(env: WfEnv) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = build_tracer_provider(exporter, batch=False)
    stop = env.runtime.events.subscribe(InvocationTracer(provider))
    yield exporter
    stop()
    provider.shutdown()


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_a_run_is_a_span_with_a_child_per_step_and_each_invocation_under_its_step(
    env: WfEnv, spans: InMemorySpanExporter
) -> None:
    spec = (
        WorkflowBuilder("two-writes")
        .step("first", "files.write", path=str(env.root / "a.txt"), content="one")
        .step("second", "files.write", path=str(env.root / "b.txt"), content="two")
        .build()
    )
    view = env.engine.start(spec, {}, "agent")
    assert view.state is RunState.COMPLETED
    (run,) = _named(spans, "aifr.workflow.run")
    steps = _named(spans, "aifr.workflow.step")
    invokes = _named(spans, "aifr.invoke")
    trace_id = run_trace_id(view.run.id)
    assert {f"{s.context.trace_id:032x}" for s in [run, *steps, *invokes]} == {trace_id}
    assert dict(run.attributes or {})["aifr.state"] == "completed"
    assert [dict(s.attributes or {})["aifr.step_id"] for s in steps] == ["first", "second"]
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in steps)
    assert sorted(i.parent.span_id for i in invokes if i.parent) == sorted(
        s.context.span_id for s in steps
    )
    audited = {
        r.event.trace_id
        for r in env.ledger.records()
        if r.event.run_id == view.run.id and r.event.kind == "invocation"
    }
    assert audited == {trace_id}


def test_without_a_tracer_the_run_still_audits_under_its_own_trace_id(env: WfEnv) -> None:
    spec = WorkflowBuilder("one").step("only", "ops.check", service="web").build()
    view = env.engine.start(spec, {}, "agent")
    assert not env.runtime.events.has_observers
    invocations = [
        r for r in env.ledger.records() if r.event.run_id == view.run.id and r.event.capability_id
    ]
    assert {r.event.trace_id for r in invocations} == {run_trace_id(view.run.id)}
