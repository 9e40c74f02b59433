"""Prometheus metrics of the runtime, built from its lifecycle events.

``prometheus-client`` is the source of truth (the ``metrics`` extra): the deliverable is
a Prometheus endpoint, and prometheus-client is small, stable and renders the text
format itself, where OpenTelemetry metrics would reach Prometheus only through a
pre-release exporter bridge and add an SDK pipeline to every count.

Counters and histograms are fed by an observer of the runtime's event bus, so a runtime
without metrics pays one attribute check per event. Levels that live in the database
(runs by state, queue depth, backlogs) are read when Prometheus scrapes, by a callback
the process supplies. Labels are capability ids, decisions and outcomes only: never a
principal, an input or a secret.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import JsonValue

__all__ = ["Levels", "RuntimeMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_WAIT_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)


class _Event(Protocol):
    """What the metrics read of a runtime lifecycle event."""

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


@dataclass(frozen=True, slots=True)
class Levels:
    """What the database holds right now, read at each scrape."""

    runs_by_state: Mapping[str, int] = field(default_factory=dict)
    queue_depth: int = 0
    audit_outbox_backlog: int | None = None
    notifications_pending: int = 0
    workers_by_state: Mapping[str, int] = field(default_factory=dict)


class _LevelCollector(Collector):
    """Gauges read from a callback when Prometheus scrapes."""

    def __init__(self, read: Callable[[], Levels]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The current levels as gauge families."""
        levels = self._read()
        runs = GaugeMetricFamily("aifr_workflow_runs", "Workflow runs by state.", labels=["state"])
        for state, count in sorted(levels.runs_by_state.items()):
            runs.add_metric([state], count)
        yield runs
        yield GaugeMetricFamily(
            "aifr_workflow_queue_depth",
            "Runs a worker drives without anyone's input (pending, running, compensating).",
            value=levels.queue_depth,
        )
        if levels.audit_outbox_backlog is not None:
            yield GaugeMetricFamily(
                "aifr_audit_outbox_backlog",
                "Audit records the configured sink has not acknowledged.",
                value=levels.audit_outbox_backlog,
            )
        yield GaugeMetricFamily(
            "aifr_notifications_pending",
            "Approval notifications the workflow outbox has not delivered.",
            value=levels.notifications_pending,
        )
        workers = GaugeMetricFamily(
            "aifr_workers", "aifr worker processes by state (live, lost, exited).", labels=["state"]
        )
        for state, count in sorted(levels.workers_by_state.items()):
            workers.add_metric([state], count)
        yield workers


class RuntimeMetrics:
    """Counters and histograms of invocations; subscribe it with ``runtime.events.subscribe``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.invocations = Counter(
            "aifr_invocations",
            "Governed invocations by capability, decision and outcome.",
            ["capability", "decision", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "aifr_invocation_duration_seconds",
            "Time from an invocation's start to its audited end.",
            ["capability", "decision"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.approval_wait = Histogram(
            "aifr_approval_wait_seconds",
            "Time a call was held for its approval.",
            ["capability"],
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.audit_append = Histogram(
            "aifr_audit_append_seconds",
            "Time to append an invocation's audit record.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    def watch_levels(self, read: Callable[[], Levels]) -> None:
        """Report ``read()``'s levels as gauges at every scrape."""
        self.registry.register(_LevelCollector(read))

    def __call__(self, event: _Event) -> None:
        """Count the event's invocation, approval wait or audit append."""
        kind, details = event.kind, event.details
        if kind == "invocation.started":
            with self._lock:
                self._started[event.request_id] = event.at
        elif kind == "approval.waited":
            started_at = details.get("started_at")
            if isinstance(started_at, int | float):
                self.approval_wait.labels(event.capability_id).observe(event.at - started_at)
        elif kind == "invocation.finished":
            self._finished(event)

    def _finished(self, event: _Event) -> None:
        details = event.details
        with self._lock:
            started_at = self._started.pop(event.request_id, None)
        decision = str(details.get("decision") or "none")
        # A call that named no registered capability is counted under one label: the
        # name an agent sent must not mint a new time series per call.
        capability = event.capability_id if details.get("capability_version") else "(unknown)"
        self.invocations.labels(capability, decision, str(details.get("status") or "unknown")).inc()
        if started_at is not None:
            self.latency.labels(capability, decision).observe(event.at - started_at)
        audit_s = details.get("audit_s")
        if isinstance(audit_s, int | float):
            self.audit_append.observe(audit_s)
