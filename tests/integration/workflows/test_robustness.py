"""Workflows as a demanding user writes them: odd templates, odd inputs, broken runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from wf_env import WfEnv, build_wf_env, file_capabilities

from aifr.capabilities import CapabilityRegistry, capability
from aifr.errors import ApprovalError, ErrorCode, InputValidationError
from aifr.invocation import CallOptions
from aifr.workflows import RunState, StepState, WorkflowBuilder


@pytest.mark.parametrize(
    "template",
    [
        "{{ inputs.a | xmlattr }}",  # AttributeError inside the filter
        "{{ 1 / 0 }}",  # ZeroDivisionError
        "{{ inputs.a | sum }}",  # TypeError
        "x{{ 1 // 0 }}y",  # ZeroDivisionError, in a text template
    ],
)
def test_a_template_failing_inside_python_fails_its_step_and_the_run_ends(
    env: WfEnv, template: str
) -> None:
    spec = (
        WorkflowBuilder("python-failure")
        .input("a", "string")
        .step("first", "files.write", path=str(env.root / "a.txt"), content="one")
        .step("second", "test.noop", n=template)
        .build()
    )

    view = env.engine.start(spec, {"a": "text"}, "agent")

    assert view.state is RunState.COMPENSATED
    assert view.step("second").error["code"] == ErrorCode.WORKFLOW_TEMPLATE_FAILED.value
    assert not (env.root / "a.txt").exists()
    assert env.runs.unfinished(frozenset({RunState.RUNNING}), 10) == []


def test_one_run_that_cannot_be_loaded_does_not_stop_recovery_of_the_others(
    sqlite_env: WfEnv,
) -> None:
    spec = WorkflowBuilder("pending").step("only", "test.noop", n=1).build()
    broken = sqlite_env.engine.start(spec, {}, "agent", execute=False).run.id
    healthy = sqlite_env.engine.start(spec, {}, "agent", execute=False).run.id
    with sqlite3.connect(sqlite_env.root.parent / "state.db") as raw:  # a definition this version
        raw.execute(  # cannot read (written by a newer aifr, say)
            "UPDATE wf_runs SET definition = ? WHERE id = ?", ('{"name": "x"}', broken)
        )

    sqlite_env.engine.recover()

    assert sqlite_env.engine.view(healthy).state is RunState.COMPLETED
    assert sqlite_env.engine.view(healthy).step("only").state is StepState.COMPLETED
    # The claim started it (its `started` record rides on the claim), then the engine
    # could not load it: nothing of it ran.
    unread = sqlite_env.engine.view(broken)
    assert unread.state is RunState.RUNNING
    assert unread.step("only").state is StepState.PENDING
    assert sqlite_env.kinds(broken) == ["workflow.created", "workflow.started"]


def test_a_step_approval_executed_outside_the_run_completes_the_run_on_one_resume(
    env: WfEnv,
) -> None:
    spec = (
        WorkflowBuilder("deploy-then-check")
        .step("deploy", "ops.deploy", service="web")
        .step("check", "ops.check", service="web")
        .build()
    )
    paused = env.engine.start(spec, {}, "agent")
    approval = env.approvals.approve(paused.step("deploy").approval_id, "bob")
    executed = env.runtime.execute_approved(approval.id)  # aifr approvals execute ID

    view = env.engine.resume(paused.run.id)

    assert executed.output == {"deployed": "web"}
    assert view.state is RunState.COMPLETED
    assert [s.state for s in view.steps] == [StepState.COMPLETED, StepState.COMPLETED]
    assert env.effects.log == [("deploy", "web"), ("check", "web")]
    assert "workflow.approved" in env.kinds(paused.run.id)


def _drifted_run(tmp_path: Path) -> tuple[WfEnv, str]:
    """A run paused in ``needs_review``: ``ops.check`` changed after the run was created."""
    first = build_wf_env(tmp_path)
    spec = WorkflowBuilder("drifting").step("check", "ops.check", service="web").build()
    run_id = first.engine.start(spec, {}, "agent", execute=False).run.id
    first.close()

    @capability("ops.check", operation="READ", risk="LOW")
    def check(service: str) -> dict[str, str]:
        """A changed health check (new handler source, new fingerprint)."""
        return {"checked": service}

    kept = [c for c in file_capabilities(first.effects) if c.spec.id != "ops.check"]
    later = build_wf_env(tmp_path, registry=CapabilityRegistry([*kept, check]))
    later.engine.recover()
    assert later.engine.view(run_id).state is RunState.NEEDS_REVIEW
    return later, run_id


def test_a_drift_review_is_accepted_only_by_a_named_operator_other_than_the_run_s_principal(
    tmp_path: Path,
) -> None:
    env, run_id = _drifted_run(tmp_path)
    try:
        with pytest.raises(InputValidationError) as unnamed:
            env.engine.resume(run_id)
        with pytest.raises(ApprovalError) as own:
            env.engine.resume(run_id, operator="agent")
        still = env.engine.view(run_id)
        accepted = env.engine.resume(run_id, operator="reviewer")
    finally:
        env.close()

    assert unnamed.value.errors[0].path == "operator"
    assert own.value.code is ErrorCode.APPROVAL_SELF_APPROVAL
    assert still.state is RunState.NEEDS_REVIEW
    assert still.run.lease_owner is None  # the refusals took no lease
    assert accepted.state is RunState.COMPLETED


def test_two_runs_asking_for_the_same_step_each_need_their_own_approval(env: WfEnv) -> None:
    """One approval runs once: a second run reusing it took the first run's result as its
    own and ended completed, though its step never ran and nobody approved it."""
    spec = WorkflowBuilder("deploy").step("deploy", "ops.deploy", service="web").build()
    first = env.engine.start(spec, {}, "agent")
    second = env.engine.start(spec, {}, "agent")
    first_approval = first.step("deploy").approval_id
    second_approval = second.step("deploy").approval_id
    assert first_approval is not None and second_approval is not None
    assert first_approval != second_approval

    env.approvals.approve(first_approval, "bob")
    done = env.engine.resume(first.run.id)
    still_waiting = env.engine.resume(second.run.id)

    assert done.state is RunState.COMPLETED
    assert still_waiting.state is RunState.WAITING_APPROVAL
    assert env.effects.log == [("deploy", "web")]

    env.approvals.approve(second_approval, "bob")
    assert env.engine.resume(second.run.id).state is RunState.COMPLETED
    assert env.effects.log == [("deploy", "web"), ("deploy", "web")]
    assert env.ledger.verify().ok


def test_the_same_call_without_an_idempotency_key_still_reuses_its_open_approval(
    env: WfEnv,
) -> None:
    asked = [env.runtime.invoke("ops.deploy", {"service": "web"}, "agent") for _ in range(2)]
    keyed = env.runtime.invoke(
        "ops.deploy", {"service": "web"}, "agent", CallOptions(idempotency_key="deploy-web-1")
    )
    keyed_again = env.runtime.invoke(
        "ops.deploy", {"service": "web"}, "agent", CallOptions(idempotency_key="deploy-web-1")
    )

    assert asked[0].approval_id == asked[1].approval_id
    assert keyed.approval_id not in (None, asked[0].approval_id)
    assert keyed_again.approval_id == keyed.approval_id


def test_cancelling_a_waiting_run_withdraws_its_approval(env: WfEnv) -> None:
    """Left pending, it could be approved and run with 'aifr approvals execute' later."""
    spec = WorkflowBuilder("deploy").step("deploy", "ops.deploy", service="web").build()
    paused = env.engine.start(spec, {}, "agent")
    approval_id = paused.step("deploy").approval_id
    assert approval_id is not None

    cancelled = env.engine.cancel(paused.run.id, operator="carol")
    with pytest.raises(ApprovalError) as refused:
        env.approvals.approve(approval_id, "bob")
    record = env.approvals.get(approval_id)
    executed = env.runtime.execute_approved(record.id)  # aifr approvals execute ID

    assert cancelled.state is RunState.CANCELLED
    assert record.status.value == "withdrawn"
    assert record.decided_by == "carol"
    assert refused.value.code is ErrorCode.APPROVAL_WITHDRAWN
    assert executed.error is not None
    assert executed.error.code is ErrorCode.APPROVAL_WITHDRAWN
    assert env.effects.log == []
    withdrawn = [r for r in env.ledger.records() if r.event.kind == "approval.withdrawn"]
    assert [(r.event.principal, r.event.details["approval_id"]) for r in withdrawn] == [
        ("carol", approval_id)
    ]
    assert env.ledger.verify().ok
