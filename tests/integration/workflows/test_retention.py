"""A worker's retention rule: real runs of a real engine pruned on schedule, at most once per period."""

from __future__ import annotations

from wf_env import WfEnv

from aifr.workflows import Retention, RunState, Worker, WorkflowBuilder


def test_the_worker_prunes_finished_runs_when_due_and_then_waits_for_the_period(env: WfEnv) -> None:
    spec = WorkflowBuilder("one").step("a", "test.noop").build()
    first = env.engine.start(spec, {}, "agent").run.id
    now = [env.runs.get(first).updated_at + 100.0]  # type: ignore[union-attr]
    retention = Retention(
        env.runs, older_than_s=50.0, actor="ops", details={"rule": "r"}, every_s=600.0,
        clock=lambda: now[0],
    )  # fmt: skip
    worker = Worker(env.engine, retention=retention)

    worker.turn()
    second = env.engine.start(spec, {}, "agent").run.id
    now[0] += 599.0  # second is old enough by now, but the period has not passed
    worker.turn()
    kept_meanwhile = env.runs.get(second) is not None
    now[0] += 1.0
    worker.turn()

    assert env.runs.get(first) is None and env.runs.get(second) is None
    assert kept_meanwhile
    pruned = [r.event for r in env.ledger.records() if r.event.kind == "workflow.runs_pruned"]
    assert [e.details["runs"] for e in pruned] == [[first], [second]]
    assert {e.details["rule"] for e in pruned} == {"r"}
    assert env.ledger.verify().ok


def test_a_run_waiting_for_approval_outlives_any_retention(env: WfEnv) -> None:
    spec = WorkflowBuilder("deploy").step("d", "ops.deploy", service="api").build()
    waiting = env.engine.start(spec, {}, "agent")
    later = [waiting.run.updated_at + 10 * 365 * 86_400.0]

    report = Retention(
        env.runs, older_than_s=1.0, actor="ops", clock=lambda: later[0]
    ).prune_if_due()

    assert waiting.state is RunState.WAITING_APPROVAL
    assert report is not None and report.runs == 0
    assert env.runs.get(waiting.run.id) is not None
