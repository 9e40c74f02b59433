"""The engine's state machine on a real SQLite database: retries, approvals, saga, drift."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from wf_env import Effects, WfEnv, build_wf_env, file_capabilities

from aifr.capabilities import CapabilityRegistry, capability
from aifr.errors import ErrorCode, InputValidationError, WorkflowError
from aifr.invocation import CallOptions
from aifr.workflows import RunState, StepKey, StepState, WorkflowBuilder, WorkflowSpec


def _two_writes(tail: str = "ops.check", **tail_inputs: object) -> WorkflowSpec:
    return (
        WorkflowBuilder("two-writes")
        .input("a", "string")
        .input("b", "string")
        .step("first", "files.write", path="{{ inputs.a }}", content="one")
        .step("second", "files.write", path="{{ inputs.b }}", content="two")
        .step("tail", tail, **({"service": "web"} | tail_inputs))  # type: ignore[arg-type]
        .build()
    )


def _paths(env: WfEnv) -> dict[str, str]:
    return {"a": str(env.root / "a.txt"), "b": str(env.root / "b.txt")}


def test_a_workflow_whose_steps_all_succeed_completes_with_one_commit_per_step(env: WfEnv) -> None:
    spec = _two_writes()
    before = env.ledger.stats.commits

    view = env.engine.start(spec, _paths(env), "agent")

    assert view.state is RunState.COMPLETED
    assert [s.state for s in view.steps] == [StepState.COMPLETED] * 3
    assert view.step("first").output["bytes"] == 3
    assert (env.root / "b.txt").read_text() == "two"
    assert env.ledger.stats.commits == before  # every step committed with its audit record inline
    assert env.kinds(view.run.id) == [
        "workflow.started",
        "invocation",
        "invocation",
        "invocation",
        "workflow.completed",
    ]


@pytest.mark.parametrize("who", ["", "  ", "agent\n"])
def test_a_run_for_a_principal_that_is_no_name_is_refused_before_it_exists(
    env: WfEnv, who: str
) -> None:
    with pytest.raises(InputValidationError) as refused:
        env.engine.start(_two_writes(), _paths(env), who)

    assert refused.value.errors[0].path == "principal"
    assert env.runs.list() == []
    assert not (env.root / "a.txt").exists()


def test_a_workflow_naming_an_unregistered_capability_is_refused_before_it_runs(
    env: WfEnv,
) -> None:
    builder = WorkflowBuilder("ghost").input("a", "string").input("b", "string")
    builder.step("write", "files.write", path="{{ inputs.a }}", content="one")
    builder.step("haunt", "no.such.thing")
    builder.step(
        "again", "files.write", path="{{ inputs.b }}", content="two",
        compensation={"capability": "no.such.undo", "inputs": {}},
    )  # fmt: skip

    with pytest.raises(WorkflowError) as refused:
        env.engine.start(builder.build(), _paths(env), "agent")

    assert refused.value.code is ErrorCode.WORKFLOW_INVALID
    assert refused.value.details["problems"] == [
        "steps[1].capability: no.such.thing is not registered",
        "steps[2].compensation.capability: no.such.undo is not registered",
    ]
    assert env.runs.list() == []
    assert not (env.root / "a.txt").exists()  # the first step never ran


def test_a_step_retried_until_it_succeeds_keeps_the_run_going(env: WfEnv) -> None:
    env.effects.fail_times["web"] = 2
    spec = (
        WorkflowBuilder("retrying")
        .step("check", "ops.check", service="web", retry={"count": 2, "backoff_s": 0.01})
        .build()
    )

    view = env.engine.start(spec, {}, "agent")

    assert view.state is RunState.COMPLETED
    assert view.step("check").attempt == 3
    assert env.kinds(view.run.id).count("workflow.step_retry") == 2


def test_an_error_not_listed_in_retry_on_is_not_retried(env: WfEnv) -> None:
    env.effects.fail_times["web"] = 1
    spec = (
        WorkflowBuilder("no-retry")
        .step(
            "check",
            "ops.check",
            service="web",
            retry={"count": 3, "backoff_s": 0, "retry_on": ["execution.timeout"]},
        )
        .build()
    )

    view = env.engine.start(spec, {}, "agent")

    assert view.state is RunState.COMPENSATED
    assert view.step("check").attempt == 1
    assert view.run.error["code"] == ErrorCode.EXECUTION_FAILED.value


def test_a_failing_step_with_on_failure_halt_leaves_completed_steps_in_place(env: WfEnv) -> None:
    spec = (
        WorkflowBuilder("halting", on_failure="halt")
        .input("a", "string")
        .step("first", "files.write", path="{{ inputs.a }}", content="kept")
        .step("boom", "ops.check", service="web", healthy=False)
        .build()
    )

    view = env.engine.start(spec, {"a": _paths(env)["a"]}, "agent")

    assert view.state is RunState.FAILED
    assert view.step("first").state is StepState.COMPLETED
    assert (env.root / "a.txt").read_text() == "kept"


def test_a_rejected_approval_fails_the_run_and_compensates(env: WfEnv) -> None:
    spec = _two_writes("ops.deploy")
    paused = env.engine.start(spec, _paths(env), "agent")
    approval_id = paused.step("tail").approval_id
    assert paused.state is RunState.WAITING_APPROVAL

    env.approvals.reject(approval_id, "bob", reason="not today")
    view = env.engine.resume(paused.run.id)

    assert view.state is RunState.COMPENSATED
    assert view.run.error["code"] == ErrorCode.APPROVAL_REJECTED.value
    assert not (env.root / "a.txt").exists()
    assert not (env.root / "b.txt").exists()
    assert ("deploy", "web") not in env.effects.log


def test_an_expired_approval_is_enforced_by_the_engine_and_compensates(env: WfEnv) -> None:
    paused = env.engine.start(_two_writes("ops.deploy"), _paths(env), "agent")
    env.clock[0] += 601  # past the approval's 600 s lifetime

    (view,) = env.engine.recover()

    assert view.state is RunState.COMPENSATED
    assert view.run.error["code"] == ErrorCode.APPROVAL_EXPIRED.value
    assert "approval.expired" in [r.event.kind for r in env.ledger.records()]
    assert paused.run.id == view.run.id


def test_a_waiting_run_is_left_alone_by_recovery_until_someone_decides(env: WfEnv) -> None:
    paused = env.engine.start(_two_writes("ops.deploy"), _paths(env), "agent")

    assert env.engine.recover() == []
    env.approvals.approve(paused.step("tail").approval_id, "bob")
    (view,) = env.engine.recover()

    assert view.state is RunState.COMPLETED
    assert env.effects.log.count(("deploy", "web")) == 1


def test_a_failed_compensation_stops_visibly_and_can_be_retried_by_an_operator(
    env: WfEnv,
) -> None:
    paths = _paths(env)
    (env.root / "a.txt").write_text("original")
    env.effects.fail_undo.add(paths["b"])
    spec = _two_writes(healthy=False)

    stuck = env.engine.start(spec, paths, "agent")

    assert stuck.state is RunState.COMPENSATION_FAILED
    assert stuck.run.failed_step == "second"
    assert stuck.step("second").state is StepState.COMPENSATION_FAILED
    assert stuck.step("first").state is StepState.COMPLETED
    assert (env.root / "a.txt").read_text() == "one"
    with pytest.raises(WorkflowError) as bad:
        env.engine.resume(stuck.run.id)
    assert bad.value.code is ErrorCode.WORKFLOW_BAD_STATE

    env.effects.fail_undo.clear()
    fixed = env.engine.retry_compensation(stuck.run.id, operator="ops-oncall")

    assert fixed.state is RunState.COMPENSATED
    assert (env.root / "a.txt").read_text() == "original"
    assert not (env.root / "b.txt").exists()
    retried = [
        r.event for r in env.ledger.records() if r.event.kind == "workflow.compensation_retried"
    ]
    assert [e.principal for e in retried] == ["ops-oncall"]


def test_retry_compensation_of_a_run_that_did_not_fail_is_refused(env: WfEnv) -> None:
    view = env.engine.start(_two_writes(), _paths(env), "agent")

    with pytest.raises(WorkflowError) as refused:
        env.engine.retry_compensation(view.run.id, operator="ops")

    assert refused.value.code is ErrorCode.WORKFLOW_BAD_STATE


def test_cancelling_a_waiting_run_compensates_it_and_ends_cancelled(env: WfEnv) -> None:
    paused = env.engine.start(_two_writes("ops.deploy"), _paths(env), "agent")

    view = env.engine.cancel(paused.run.id, operator="alice")

    assert view.state is RunState.CANCELLED
    assert not (env.root / "a.txt").exists()
    assert "workflow.cancel_requested" in env.kinds(view.run.id)


def test_an_unknown_run_is_reported_by_code(env: WfEnv) -> None:
    with pytest.raises(WorkflowError) as missing:
        env.engine.view("run-nope")
    assert missing.value.code is ErrorCode.WORKFLOW_RUN_NOT_FOUND


def test_a_template_naming_a_missing_output_field_fails_the_step_without_running_it(
    env: WfEnv,
) -> None:
    spec = (
        WorkflowBuilder("bad-template")
        .input("a", "string")
        .step("first", "files.write", path="{{ inputs.a }}", content="x")
        .step("second", "test.noop", n="{{ steps.first.output.nothing }}")
        .build()
    )

    view = env.engine.start(spec, {"a": _paths(env)["a"]}, "agent")

    assert view.state is RunState.COMPENSATED
    assert view.step("second").error["code"] == ErrorCode.WORKFLOW_TEMPLATE_FAILED.value
    assert not (env.root / "a.txt").exists()


def test_a_single_expression_template_keeps_the_native_type(env: WfEnv) -> None:
    spec = (
        WorkflowBuilder("native")
        .input("count", "integer")
        .step("one", "test.noop", n="{{ inputs.count * 2 }}")
        .step("two", "test.noop", n="{{ steps.one.output.n + 1 }}")
        .build()
    )

    view = env.engine.start(spec, {"count": 20}, "agent")

    assert view.step("two").output == {"n": 41}


def test_a_crashed_worker_s_run_is_resumed_by_another_engine_with_the_same_keys(
    env: WfEnv,
) -> None:
    spec = _two_writes()
    created = env.engine.start(spec, _paths(env), "agent", execute=False)
    dead = env.runs.acquire(created.run.id, "otherhost:1:dead", 0.0, env.engine.clock())
    assert dead is not None

    (view,) = env.new_engine().recover()

    assert view.state is RunState.COMPLETED
    assert [what for what, _ in env.effects.log] == ["write", "write", "check"]
    keys = [
        r.event.details["idempotency_key"]
        for r in env.ledger.records()
        if r.event.kind == "invocation"
    ]
    assert keys[0] == str(StepKey(view.run.id, "first", 1))


def test_an_interrupted_step_replays_its_stored_result_instead_of_running_again(
    env: WfEnv,
) -> None:
    spec = _two_writes()
    view = env.engine.start(spec, _paths(env), "agent")
    key = str(StepKey(view.run.id, "first", 1))

    replay = env.runtime.invoke(
        "files.write",
        {"path": _paths(env)["a"], "content": "one"},
        "agent",
        CallOptions(idempotency_key=key),
    )

    assert replay.replayed
    assert replay.output == view.step("first").output
    assert env.effects.log.count(("write", _paths(env)["a"])) == 1


def _registry_with_changed_check(env: WfEnv) -> CapabilityRegistry:
    @capability("ops.check", operation="READ", risk="LOW")
    def check(service: str, healthy: bool = True) -> dict[str, bool]:
        """A changed health check (new handler source, new fingerprint)."""
        return {"healthy": healthy, "v2": True}

    kept = [c for c in file_capabilities(env.effects) if c.spec.id != "ops.check"]
    return CapabilityRegistry([*kept, check])


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("needs_review", RunState.NEEDS_REVIEW),
        ("continue", RunState.COMPLETED),
        ("fail", RunState.COMPENSATED),
    ],
)
def test_a_capability_changed_between_start_and_resume_is_handled_by_the_drift_rule(
    tmp_path: Path, rule: str, expected: RunState
) -> None:
    first = build_wf_env(tmp_path)
    paused = first.engine.start(_two_writes("ops.deploy"), _paths(first), "agent")
    first.approvals.approve(paused.step("tail").approval_id, "bob")
    spec = (
        WorkflowBuilder("drifting")
        .input("a", "string")
        .step("write", "files.write", path="{{ inputs.a }}", content="x")
        .step("check", "ops.check", service="web")
        .build()
    )
    created = first.engine.start(spec, {"a": _paths(first)["a"]}, "agent", execute=False)
    first.close()
    later = build_wf_env(tmp_path, drift=rule)  # type: ignore[arg-type]
    changed = _registry_with_changed_check(later)
    later.close()
    later = build_wf_env(tmp_path, drift=rule, registry=changed)  # type: ignore[arg-type]
    try:
        later.engine.recover()
        view = later.engine.view(created.run.id)
        assert view.state is expected
        assert "workflow.fingerprint_drift" in later.kinds(created.run.id)
        if expected is RunState.NEEDS_REVIEW:
            assert view.run.error["code"] == ErrorCode.WORKFLOW_FINGERPRINT_DRIFT.value
            resumed = later.engine.resume(created.run.id, operator="reviewer")
            assert resumed.state is RunState.COMPLETED
            assert "workflow.review_accepted" in later.kinds(created.run.id)
    finally:
        later.close()


def test_plan_shows_each_step_s_risk_and_decision_without_running_anything(env: WfEnv) -> None:
    spec = (
        WorkflowBuilder("planned")
        .input("a", "string")
        .step("write", "files.write", path="{{ inputs.a }}", content="x")
        .step("deploy", "ops.deploy", service="web")
        .step("wipe", "ops.wipe", path="{{ inputs.a }}")
        .build()
    )

    planned = env.engine.plan(spec, {"a": _paths(env)["a"]}, "agent")

    assert [(p.step_id, p.risk, p.decision) for p in planned] == [
        ("write", "MEDIUM", "ALLOW"),
        ("deploy", "MEDIUM", "REQUIRE_APPROVAL"),
        ("wipe", "HIGH", "DENY"),
    ]
    assert planned[0].compensation == "files.restore"
    assert env.effects.log == []
    assert env.runs.list() == []


def test_concurrent_runs_share_commits_and_every_run_completes(tmp_path: Path) -> None:
    env = build_wf_env(tmp_path, synchronous="FULL")  # the durable default: sharing matters
    spec = WorkflowBuilder("many").step("a", "test.noop").step("b", "test.noop").build()
    views: list = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(10):
            view = env.engine.start(spec, {}, "agent")
            with lock:
                views.append(view)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert len(views) == 80
        assert {v.state for v in views} == {RunState.COMPLETED}
        group = env.runs.group
        assert group.jobs == 80 * 3  # per run: create, step a, step b carrying the run's end
        assert group.commits < group.jobs
        assert env.ledger.verify().ok
    finally:
        env.close()


def test_a_compensation_override_runs_its_own_capability_with_the_step_output(
    env: WfEnv,
) -> None:
    target = env.root / "o.txt"
    spec = (
        WorkflowBuilder("override")
        .input("p", "string")
        .step(
            "write",
            "files.write",
            path="{{ inputs.p }}",
            content="new",
            compensation={
                "capability": "files.restore",
                "inputs": {"path": "{{ output.path }}", "content": "restored by override"},
            },
        )
        .step("boom", "ops.check", service="web", healthy=False)
        .build()
    )

    view = env.engine.start(spec, {"p": str(target)}, "agent")

    assert view.state is RunState.COMPENSATED
    assert view.step("write").undo_capability == "files.restore"
    assert target.read_text() == "restored by override"


def test_a_compensable_step_without_undo_data_leaves_the_run_compensation_failed(
    tmp_path: Path,
) -> None:
    @capability(
        "files.sloppy", operation="WRITE", risk="MEDIUM", compensation="files.restore",
        side_effect_scope="filesystem",
    )  # fmt: skip
    def sloppy(path: str) -> dict[str, str]:
        """Claims a compensation but returns no undo inputs."""
        return {"path": path}

    registry = CapabilityRegistry([*file_capabilities(Effects()), sloppy])
    env = build_wf_env(tmp_path, registry=registry)
    try:
        spec = (
            WorkflowBuilder("sloppy")
            .step("s", "files.sloppy", path="x")
            .step("boom", "ops.check", service="web", healthy=False)
            .build()
        )

        view = env.engine.start(spec, {}, "agent")

        assert view.state is RunState.COMPENSATION_FAILED
        assert view.run.failed_step == "s"
        assert view.step("s").undo_error["code"] == ErrorCode.WORKFLOW_COMPENSATION_FAILED.value
    finally:
        env.close()


def test_a_denied_compensation_stops_in_compensation_failed(tmp_path: Path) -> None:
    policy = """
version: 1
default: DENY
rules:
  - id: no-restore
    when: {capability: "files.restore"}
    decision: DENY
    reason: restores are frozen
  - id: allow
    when: {capability: ["files.*", "ops.*"]}
    decision: ALLOW
"""
    env = build_wf_env(tmp_path, policy=policy)
    try:
        view = env.engine.start(_two_writes(healthy=False), _paths(env), "agent")

        assert view.state is RunState.COMPENSATION_FAILED
        assert view.run.failed_step == "second"
        assert view.step("second").undo_error["code"] == ErrorCode.POLICY_DENIED.value
        assert "workflow.compensation_failed" in env.kinds(view.run.id)
    finally:
        env.close()


def test_an_approval_consumed_by_a_crashed_process_without_a_result_needs_review(
    env: WfEnv,
) -> None:
    paused = env.engine.start(_two_writes("ops.deploy"), _paths(env), "agent")
    approval_id = paused.step("tail").approval_id
    env.approvals.approve(approval_id, "bob")
    approval = env.approvals.get(approval_id)
    env.approvals.consume(  # what a process does right before executing, then dies
        approval_id, digest_value=approval.request_digest, request_id="crashed"
    )

    view = env.engine.resume(paused.run.id)

    assert view.state is RunState.NEEDS_REVIEW
    assert view.run.error["code"] == ErrorCode.APPROVAL_CONSUMED.value
    cancelled = env.engine.cancel(paused.run.id, operator="alice")
    assert cancelled.state is RunState.CANCELLED
    assert not (env.root / "a.txt").exists()


def test_a_step_past_its_timeout_is_retried_on_execution_timeout_then_compensated(
    tmp_path: Path,
) -> None:
    effects = Effects()
    never = threading.Event()
    calls: list[int] = []

    @capability("test.slow", operation="READ", risk="LOW")
    def slow(n: int = 0) -> dict[str, int]:
        """Take longer than the step allows, every time."""
        calls.append(n)
        never.wait(0.2)  # the slow work: always past the step's 0.05 s timeout
        return {"n": n}

    registry = CapabilityRegistry([*file_capabilities(effects), slow])
    env = build_wf_env(tmp_path, registry=registry)
    spec = (
        WorkflowBuilder("timing-out")
        .input("a", "string")
        .step("write", "files.write", path="{{ inputs.a }}", content="x")
        .step(
            "slow",
            "test.slow",
            timeout_s=0.05,
            retry={"count": 1, "backoff_s": 0, "retry_on": ["execution.timeout"]},
        )
        .build()
    )
    try:
        view = env.engine.start(spec, {"a": _paths(env)["a"]}, "agent")

        assert view.state is RunState.COMPENSATED
        assert view.run.failed_step == "slow"
        assert view.step("slow").attempt == 2
        assert view.run.error["code"] == ErrorCode.EXECUTION_TIMEOUT.value
        assert len(calls) == 2
        assert not (env.root / "a.txt").exists()
        assert env.kinds(view.run.id).count("workflow.step_retry") == 1
    finally:
        env.close()
