"""Workflows as a demanding user writes them: odd templates, odd inputs, broken runs."""

from __future__ import annotations

import sqlite3

import pytest
from wf_env import WfEnv

from aifr.errors import ErrorCode
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


def test_one_run_that_cannot_be_loaded_does_not_stop_recovery_of_the_others(env: WfEnv) -> None:
    spec = WorkflowBuilder("pending").step("only", "test.noop", n=1).build()
    broken = env.engine.start(spec, {}, "agent", execute=False).run.id
    healthy = env.engine.start(spec, {}, "agent", execute=False).run.id
    with sqlite3.connect(env.root.parent / "state.db") as raw:  # a definition this version
        raw.execute(  # cannot read (written by a newer aifr, say)
            "UPDATE wf_runs SET definition = ? WHERE id = ?", ('{"name": "x"}', broken)
        )

    env.engine.recover()

    assert env.engine.view(healthy).state is RunState.COMPLETED
    assert env.engine.view(healthy).step("only").state is StepState.COMPLETED
    assert env.engine.view(broken).state is RunState.PENDING


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
    executed = env.runtime.invoke(  # what 'aifr approvals execute ID' does
        f"{approval.capability_id}@{approval.capability_version}",
        approval.inputs,
        approval.principal,
        roles=frozenset(approval.roles),
        workflow_id=approval.workflow_id,
        approval_id=approval.id,
    )

    view = env.engine.resume(paused.run.id)

    assert executed.output == {"deployed": "web"}
    assert view.state is RunState.COMPLETED
    assert [s.state for s in view.steps] == [StepState.COMPLETED, StepState.COMPLETED]
    assert env.effects.log == [("deploy", "web"), ("check", "web")]
    assert "workflow.approved" in env.kinds(paused.run.id)
