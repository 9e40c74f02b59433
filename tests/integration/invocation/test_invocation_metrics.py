"""Prometheus metrics of governed invocations, read back from the registry's text format."""

from __future__ import annotations

from invocation_env import Env
from prometheus_client import generate_latest

from aifr.observability.metrics import Levels, RuntimeMetrics


def _samples(metrics: RuntimeMetrics) -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    pairs = (line.rpartition(" ") for line in text.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, _, value in pairs if name}


def test_invocations_are_counted_by_capability_decision_and_outcome(env: Env) -> None:
    metrics = RuntimeMetrics()
    env.runtime.events.subscribe(metrics)
    env.runtime.invoke("demo.echo@1", {"text": "a"}, "alice")
    env.runtime.invoke("demo.echo@1", {"text": "b"}, "alice")
    env.runtime.invoke("demo.forbidden", {}, "alice")
    samples = _samples(metrics)
    ok = 'aifr_invocations_total{capability="demo.echo",decision="ALLOW",outcome="ok"}'
    denied = 'aifr_invocations_total{capability="demo.forbidden",decision="DENY",outcome="denied"}'
    assert samples[ok] == 2
    assert samples[denied] == 1
    assert (
        samples['aifr_invocation_duration_seconds_count{capability="demo.echo",decision="ALLOW"}']
        == 2
    )
    assert samples["aifr_audit_append_seconds_count"] == 3
    assert "alice" not in generate_latest(metrics.registry).decode()


def test_names_of_unknown_capabilities_share_one_label_and_mint_no_series(env: Env) -> None:
    metrics = RuntimeMetrics()
    env.runtime.events.subscribe(metrics)
    for n in range(5):
        env.runtime.invoke(f"made.up.name{n}", {}, "alice")
    samples = _samples(metrics)
    unknown = [name for name in samples if name.startswith("aifr_invocations_total")]
    assert unknown == [
        'aifr_invocations_total{capability="(unknown)",decision="none",outcome="failed"}'
    ]
    assert samples[unknown[0]] == 5


def test_levels_are_read_when_scraped() -> None:
    metrics = RuntimeMetrics()
    reads = [Levels(runs_by_state={"completed": 2}, queue_depth=1, audit_outbox_backlog=7)]
    metrics.watch_levels(lambda: reads[-1])
    samples = _samples(metrics)
    assert samples['aifr_workflow_runs{state="completed"}'] == 2
    assert samples["aifr_workflow_queue_depth"] == 1
    assert samples["aifr_audit_outbox_backlog"] == 7
    reads.append(Levels())
    assert "aifr_audit_outbox_backlog" not in _samples(metrics)  # no sink: no backlog gauge
