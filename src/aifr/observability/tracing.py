"""OpenTelemetry traces of governed invocations, built from the runtime's lifecycle events.

The tracer is an observer of the runtime's event bus, so a runtime without it pays one
attribute check per event and imports nothing of OpenTelemetry (the ``otel`` extra).
Each invocation becomes a span ``aifr.invoke``, with a child span per policy decision
(``aifr.policy.decide``) and per approval wait (``aifr.approval.wait``). Attributes
name the capability and its version, the principal, the decision, the rule, the risk
and the outcome; never inputs, outputs or secrets.

The span's trace id is the invocation's trace id, the one its audit record carries, so
a trace and the ledger can be joined. A call that brought a W3C ``traceparent``
continues that trace under the caller's span.
"""

from __future__ import annotations

import importlib
import random
import re
import sys
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler
from opentelemetry.sdk.trace.sampling import Decision as SamplingDecision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.util.types import AttributeValue
from pydantic import JsonValue

__all__ = ["InvocationTracer", "build_tracer_provider", "exporter_for"]

_pinned_trace: ContextVar[int | None] = ContextVar("aifr_pinned_trace", default=None)
_pinned_span: ContextVar[int | None] = ContextVar("aifr_pinned_span", default=None)


class _Event(Protocol):
    """What the tracer reads of a runtime lifecycle event."""

    @property
    def kind(self) -> str: ...
    @property
    def request_id(self) -> str: ...
    @property
    def capability_id(self) -> str: ...
    @property
    def at(self) -> float: ...
    @property
    def details(self) -> Mapping[str, JsonValue]: ...


class _InvocationTraceIds(RandomIdGenerator):
    """Random ids, except that a new trace takes the invocation's own trace id."""

    def generate_trace_id(self) -> int:
        """The pinned trace id while a span for an invocation starts, else a random one."""
        pinned = _pinned_trace.get()
        return pinned if pinned is not None else super().generate_trace_id()

    def generate_span_id(self) -> int:
        """The pinned span id while a workflow span starts, else a random one."""
        pinned = _pinned_span.get()
        return pinned if pinned is not None else super().generate_span_id()


def exporter_for(name: str) -> SpanExporter | None:
    """The exporter ``OTEL_TRACES_EXPORTER`` names: ``console``, ``otlp`` or ``none``.

    ``otlp`` needs ``opentelemetry-exporter-otlp`` and reads the standard
    ``OTEL_EXPORTER_OTLP_*`` variables itself.

    Raises:
        ModuleNotFoundError: ``otlp`` without the OTLP exporter package.
        ValueError: another name.
    """
    if name == "none":
        return None
    if name == "console":  # stderr, one line per span: stdout is the command's output
        return ConsoleSpanExporter(out=sys.stderr, formatter=_json_line)
    if name == "otlp":
        otlp = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        exporter: SpanExporter = otlp.OTLPSpanExporter()
        return exporter
    raise ValueError(f"OTEL_TRACES_EXPORTER {name!r}: use console, otlp or none")


def _json_line(span: ReadableSpan) -> str:
    line: str = span.to_json(indent=None)
    return line + "\n"


def build_tracer_provider(exporter: SpanExporter, *, batch: bool = True) -> TracerProvider:
    """A provider exporting to ``exporter`` whose new traces keep the invocation's trace id.

    The sampler and the resource come from the standard ``OTEL_*`` variables (the SDK
    reads them). ``batch=False`` exports each span as it ends (tests, the console).
    """
    provider = TracerProvider(id_generator=_InvocationTraceIds())
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return provider


def _attributes(**values: JsonValue) -> dict[str, AttributeValue]:
    return {
        f"aifr.{key}": value
        for key, value in values.items()
        if isinstance(value, str | bool | int | float)
    }


def _ns(seconds: JsonValue) -> int | None:
    return int(seconds * 1e9) if isinstance(seconds, int | float) else None


class InvocationTracer:
    """Turns lifecycle events into spans; subscribe it with ``runtime.events.subscribe``."""

    def __init__(self, provider: TracerProvider, *, live_spans: bool = False) -> None:
        """Observe for ``provider``.

        ``live_spans=True`` builds the invocation spans through the SDK's live-span API
        instead (slower; the benchmark compares the two).
        """
        self._tracer = provider.get_tracer("aifr")
        self._resource = provider.resource
        # The provider's processors (all of them, behind one fan-out): the invocation
        # spans go straight to them. ``_active_span_processor`` is the SDK's own name
        # for it; a provider without it gets the live-span API instead.
        processor = getattr(provider, "_active_span_processor", None)
        self._processor: SpanProcessor | None = (
            processor if isinstance(processor, SpanProcessor) and not live_spans else None
        )
        sampler = provider.sampler
        self._custom_sampler: Sampler | None = (
            None if sampler.get_description() == _DEFAULT_SAMPLER else sampler
        )
        self._open: dict[str, Span] = {}
        self._pending: dict[str, _Pending] = {}
        self._handlers: dict[str, Callable[[_Event], None]] = {
            "invocation.started": self._start,
            "policy.decided": self._child,
            "approval.waited": self._child,
            "invocation.finished": self._finish,
            "workflow.run.started": self._start_workflow,
            "workflow.step.started": self._start_workflow,
            "workflow.run.finished": self._finish_workflow,
            "workflow.step.finished": self._finish_workflow,
        }
        self._lock = threading.Lock()

    def __call__(self, event: _Event) -> None:
        """Start, annotate or end the span of the event's invocation."""
        handle = self._handlers.get(event.kind)
        if handle is not None:
            handle(event)

    def _start_workflow(self, event: _Event) -> None:
        """A span for one drive of a run, or one attempt of a step, under the run's trace.

        The workflow engine chose the span ids (a step's invocation names its step's span
        as parent before the span exists here), so the id generator is pinned to them.
        """
        details = event.details
        trace_id, span_id = details.get("trace_id"), details.get("span_id")
        if not (isinstance(trace_id, str) and _is_hex(trace_id, 32)):
            return
        if not (isinstance(span_id, str) and _is_hex(span_id, 16)):
            return
        with self._lock:
            parent_span = self._open.get(f"span:{details.get('parent_span_id')}")
        parent = trace.set_span_in_context(parent_span) if parent_span is not None else None
        is_run = event.kind == "workflow.run.started"
        trace_token = _pinned_trace.set(int(trace_id, 16))
        span_token = _pinned_span.set(int(span_id, 16))
        try:
            span = self._tracer.start_span(
                "aifr.workflow.run" if is_run else "aifr.workflow.step",
                context=parent,
                start_time=_ns(event.at),
                attributes=_attributes(
                    **{k: v for k, v in details.items() if k not in ("trace_id", "span_id")},
                    **({} if is_run else {"capability_id": event.capability_id}),
                ),
            )
        finally:
            _pinned_span.reset(span_token)
            _pinned_trace.reset(trace_token)
        if isinstance(span, Span):
            with self._lock:
                self._open[f"span:{span_id}"] = span

    def _finish_workflow(self, event: _Event) -> None:
        with self._lock:
            span = self._open.pop(f"span:{event.details.get('span_id')}", None)
        if span is None:
            return
        span.set_attributes(_attributes(state=event.details.get("state")))
        span.end(end_time=_ns(event.at))

    def _start(self, event: _Event) -> None:
        """Note the invocation's start; its spans are made whole when it finishes.

        Making the spans at the end, with their recorded start times, sets every
        attribute once and leaves nothing open between the events.
        """
        details = event.details
        trace_id = details.get("trace_id")
        parent_span = details.get("parent_span_id")
        pinned = int(trace_id, 16) if isinstance(trace_id, str) and _is_hex(trace_id, 32) else None
        parent = None
        if pinned is not None and isinstance(parent_span, str) and _is_hex(parent_span, 16):
            parent = SpanContext(pinned, int(parent_span, 16), is_remote=True, trace_flags=_SAMPLED)
        attributes: dict[str, AttributeValue] = {
            "aifr.capability_id": event.capability_id,
            "aifr.request_id": event.request_id,
        }
        _put(attributes, "aifr.principal", details.get("principal"))
        # One dict operation each, atomic under the GIL: no lock on the hot path.
        self._pending[event.request_id] = _Pending(_ns(event.at), pinned, parent, attributes)

    def _child(self, event: _Event) -> None:
        pending = self._pending.get(event.request_id)
        if pending is None:
            return
        details = event.details
        if event.kind == "policy.decided":
            name = "aifr.policy.decide"
            attributes: dict[str, AttributeValue] = {"aifr.capability_id": event.capability_id}
            for key, attribute in _DECISION_KEYS:
                _put(attributes, attribute, details.get(key))
            pending.attributes.update(attributes)
        else:
            name = "aifr.approval.wait"
            attributes = {"aifr.capability_id": event.capability_id}
            _put(attributes, "aifr.approved", details.get("approved"))
        pending.children.append((name, _ns(details.get("started_at")), _ns(event.at), attributes))

    def _finish(self, event: _Event) -> None:
        pending = self._pending.pop(event.request_id, None)
        if pending is None:
            return
        details = event.details
        attributes = pending.attributes
        for key, attribute in _FINISH_KEYS:
            value = details.get(key)
            if isinstance(value, str | bool | int | float):
                attributes[attribute] = value
        failed = details.get("status") == "failed"
        if self._processor is None:
            self._finish_with_spans(pending, failed, details.get("error_code"), _ns(event.at))
        else:
            self._finish_fast(pending, self._processor, failed, details.get("error_code"), event)

    def _finish_fast(
        self,
        pending: _Pending,
        processor: SpanProcessor,
        failed: bool,
        error_code: JsonValue,
        event: _Event,
    ) -> None:
        """Hand the finished spans to the provider's processors as ``ReadableSpan``s.

        The spans are built after the fact from recorded times, so the live-span API
        (a lock per span, attribute cleaning and span limits, the sampler per span, a
        context per child) would only rebuild what is already final: the attributes
        here are primitives by construction. The sampler is asked once per invocation
        unless it is the SDK's default (parent-based, always on), whose answer is known.
        """
        parent = pending.parent
        trace_id = pending.trace_id if pending.trace_id is not None else _new_trace_id()
        attributes = pending.attributes
        flags, trace_state = _SAMPLED, None
        if parent is not None and not parent.trace_flags.sampled:
            flags = _NOT_SAMPLED
        if self._custom_sampler is not None:
            result = self._custom_sampler.should_sample(
                trace.set_span_in_context(NonRecordingSpan(parent)) if parent else None,
                trace_id,
                "aifr.invoke",
                SpanKind.INTERNAL,
                attributes,
            )
            if result.decision is SamplingDecision.DROP:
                return
            sampled = result.decision is SamplingDecision.RECORD_AND_SAMPLE
            flags = _SAMPLED if sampled else _NOT_SAMPLED
            trace_state = result.trace_state
            if result.attributes:
                attributes.update(result.attributes)
        elif flags is _NOT_SAMPLED:
            return
        context = SpanContext(
            trace_id, _new_span_id(), is_remote=False, trace_flags=flags, trace_state=trace_state
        )
        resource, scope = self._resource, _SCOPE
        for name, start_ns, end_ns, child_attributes in pending.children:
            processor.on_end(
                ReadableSpan(
                    name,
                    SpanContext(trace_id, _new_span_id(), False, flags, trace_state),
                    context,
                    resource,
                    child_attributes,
                    start_time=start_ns,
                    end_time=end_ns,
                    instrumentation_scope=scope,
                )
            )
        processor.on_end(
            ReadableSpan(
                "aifr.invoke",
                context,
                parent,
                resource,
                attributes,
                status=Status(StatusCode.ERROR, str(error_code or "failed")) if failed else _UNSET,
                start_time=pending.start_ns,
                end_time=_ns(event.at),
                instrumentation_scope=scope,
            )
        )

    def _finish_with_spans(
        self, pending: _Pending, failed: bool, error_code: JsonValue, end_ns: int | None
    ) -> None:
        """The live-span API, for a provider whose processors cannot be reached."""
        token = _pinned_trace.set(pending.trace_id)
        parent = (
            trace.set_span_in_context(NonRecordingSpan(pending.parent))
            if pending.parent is not None
            else None
        )
        try:
            span = self._tracer.start_span(
                "aifr.invoke",
                context=parent,
                start_time=pending.start_ns,
                attributes=pending.attributes,
            )
        finally:
            _pinned_trace.reset(token)
        if failed:
            span.set_status(StatusCode.ERROR, str(error_code or "failed"))
        if pending.children:
            inside = trace.set_span_in_context(span)
            for name, start_ns, child_end_ns, child_attributes in pending.children:
                child = self._tracer.start_span(
                    name, context=inside, start_time=start_ns, attributes=child_attributes
                )
                child.end(end_time=child_end_ns)
        span.end(end_time=end_ns)


@dataclass(slots=True)
class _Pending:
    """An invocation between its start and its end: what its spans will be made of."""

    start_ns: int | None
    trace_id: int | None
    parent: SpanContext | None
    attributes: dict[str, AttributeValue]
    children: list[tuple[str, int | None, int | None, dict[str, AttributeValue]]] = field(
        default_factory=list
    )


_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)
_SCOPE = InstrumentationScope("aifr")
_DECISION_KEYS = (("decision", "aifr.decision"), ("rule_id", "aifr.rule_id"), ("risk", "aifr.risk"))
_FINISH_KEYS = (
    ("capability_version", "aifr.capability_version"),
    ("decision", "aifr.decision"),
    ("rule_id", "aifr.rule_id"),
    ("risk", "aifr.risk"),
    ("status", "aifr.outcome"),
    ("error_code", "aifr.error_code"),
    ("audit_id", "aifr.audit_id"),
)
_DEFAULT_SAMPLER: str = ParentBased(ALWAYS_ON).get_description()  # type: ignore[no-untyped-call]
_getrandbits = random.getrandbits


def _new_trace_id() -> int:
    return _getrandbits(128) or 1


def _new_span_id() -> int:
    return _getrandbits(64) or 1


def _put(attributes: dict[str, AttributeValue], key: str, value: JsonValue) -> None:
    if isinstance(value, str | bool | int | float):
        attributes[key] = value


_HEX = re.compile(r"[0-9a-f]+")


def _is_hex(value: str, length: int) -> bool:
    return len(value) == length and _HEX.fullmatch(value) is not None
