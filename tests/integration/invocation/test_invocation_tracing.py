"""OpenTelemetry spans of governed invocations, read from an in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from invocation_env import Env
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from aifr.invocation import CallOptions, Status
from aifr.observability.traceparent import format_traceparent
from aifr.observability.tracing import InvocationTracer, build_tracer_provider


@pytest.fixture(params=[False, True], ids=["readable-spans", "live-spans"])
def spans(env: Env, request: pytest.FixtureRequest) -> Iterator[InMemorySpanExporter]:
    """Every test runs on both paths: finished spans handed to the processors (the
    default) and the SDK's live-span API; they must export the same spans."""
    exporter = InMemorySpanExporter()
    provider = build_tracer_provider(exporter, batch=False)
    tracer = InvocationTracer(provider, live_spans=request.param)
    stop = env.runtime.events.subscribe(tracer)
    yield exporter
    stop()
    provider.shutdown()


def _by_name(exporter: InMemorySpanExporter, name: str) -> list:  # type: ignore[type-arg]
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_an_invocation_is_one_span_whose_trace_id_is_the_audit_records(
    env: Env, spans: InMemorySpanExporter
) -> None:
    result = env.runtime.invoke("demo.echo@1", {"text": "top-secret-input"}, "alice")
    assert result.status is Status.OK
    (span,) = _by_name(spans, "aifr.invoke")
    (record,) = env.audit_rows()
    assert f"{span.context.trace_id:032x}" == record["trace_id"] == result.trace_id
    attributes = dict(span.attributes or {})
    assert attributes["aifr.capability_id"] == "demo.echo"
    assert attributes["aifr.capability_version"] == "1"
    assert attributes["aifr.principal"] == "alice"
    assert attributes["aifr.decision"] == "ALLOW"
    assert attributes["aifr.rule_id"] == "allow-demo"
    assert attributes["aifr.outcome"] == "ok"
    assert attributes["aifr.audit_id"] == record["id"]
    assert "aifr.risk" in attributes
    assert all("top-secret-input" not in str(v) for v in attributes.values())


def test_the_policy_decision_is_a_child_span_of_the_invocation(
    env: Env, spans: InMemorySpanExporter
) -> None:
    env.runtime.invoke("demo.forbidden", {}, "alice")
    (invoke,) = _by_name(spans, "aifr.invoke")
    (decide,) = _by_name(spans, "aifr.policy.decide")
    assert decide.parent is not None and decide.parent.span_id == invoke.context.span_id
    assert decide.context.trace_id == invoke.context.trace_id
    assert dict(decide.attributes or {})["aifr.decision"] == "DENY"
    assert dict(decide.attributes or {})["aifr.rule_id"] == "forbid"
    assert dict(invoke.attributes or {})["aifr.outcome"] == "denied"


def test_an_approval_wait_is_a_span_with_its_outcome(env: Env, spans: InMemorySpanExporter) -> None:
    pending = env.runtime.invoke("demo.transfer", {"to": "x", "amount": 5}, "alice")
    assert pending.status is Status.PENDING_APPROVAL
    (wait,) = _by_name(spans, "aifr.approval.wait")
    assert dict(wait.attributes or {})["aifr.approved"] is False
    assert dict(_by_name(spans, "aifr.invoke")[0].attributes or {})["aifr.outcome"] == (
        "pending_approval"
    )


def test_an_incoming_traceparent_is_continued_under_the_callers_span(
    env: Env, spans: InMemorySpanExporter
) -> None:
    trace_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    options = CallOptions(traceparent=format_traceparent(trace_id, caller_span))
    result = env.runtime.invoke("demo.echo@1", {"text": "a"}, "alice", options)
    (span,) = _by_name(spans, "aifr.invoke")
    assert f"{span.context.trace_id:032x}" == trace_id == result.trace_id
    assert span.parent is not None and f"{span.parent.span_id:016x}" == caller_span
    assert env.audit_rows()[0]["trace_id"] == trace_id


def test_a_malformed_traceparent_is_ignored_and_the_call_starts_its_own_trace(
    env: Env, spans: InMemorySpanExporter
) -> None:
    options = CallOptions(traceparent="00-zzzz-not-a-trace-01")
    result = env.runtime.invoke("demo.echo@1", {"text": "a"}, "alice", options)
    assert result.status is Status.OK
    (span,) = _by_name(spans, "aifr.invoke")
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" == result.trace_id


def test_without_the_tracer_no_span_is_made(env: Env) -> None:
    exporter = InMemorySpanExporter()
    build_tracer_provider(exporter, batch=False)
    env.runtime.invoke("demo.echo@1", {"text": "a"}, "alice")
    assert exporter.get_finished_spans() == ()
    assert not env.runtime.events.has_observers


def test_a_sampler_that_drops_leaves_no_span_and_the_call_still_runs(env: Env) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    stop = env.runtime.events.subscribe(InvocationTracer(provider))
    try:
        assert env.runtime.invoke("demo.echo@1", {"text": "a"}, "alice").status is Status.OK
    finally:
        stop()
    assert exporter.get_finished_spans() == ()


def test_a_batch_processor_exports_the_spans_off_the_call_and_console_json_renders_them(
    env: Env,
) -> None:
    exporter = InMemorySpanExporter()
    provider = build_tracer_provider(exporter, batch=True)
    stop = env.runtime.events.subscribe(InvocationTracer(provider))
    try:
        env.runtime.invoke("demo.forbidden", {}, "alice")
    finally:
        stop()
    provider.force_flush()
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == ["aifr.invoke", "aifr.policy.decide"]
    invoke = next(s for s in exporter.get_finished_spans() if s.name == "aifr.invoke")
    assert invoke.resource is provider.resource
    assert invoke.instrumentation_scope is not None
    assert invoke.instrumentation_scope.name == "aifr"
    assert invoke.end_time is not None and invoke.start_time is not None
    assert invoke.end_time >= invoke.start_time
    assert '"aifr.outcome": "denied"' in invoke.to_json()
    provider.shutdown()
