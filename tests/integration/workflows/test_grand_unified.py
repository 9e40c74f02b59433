"""The Grand Unified Test (seeds 001 and 003): registry, policy, approval, saga, audit.

Part one is the seeds' own scenario: a HIGH-risk capability, a policy that denies HIGH
risk, and a workflow whose second step uses it. Part two runs everything at once.
"""

from __future__ import annotations

from pathlib import Path

from wf_env import WfEnv

from aifr.workflows import RunState, StepState, WorkflowBuilder, load_workflow_text


def test_a_denied_high_risk_step_fails_the_run_before_it_executes_and_compensates_step_one(
    env: WfEnv,
) -> None:
    config = env.root / "app.conf"
    config.write_text("version=1\n")
    spec = load_workflow_text(
        """
name: seeds-grand-unified
inputs:
  path: {type: string}
steps:
  - id: update
    capability: files.write
    inputs: {path: "{{ inputs.path }}", content: "version=2\\n"}
  - id: wipe
    capability: ops.wipe
    inputs: {path: "{{ inputs.path }}"}
"""
    )
    assert env.registry.get("ops.wipe").effective_risk.value == "HIGH"

    view = env.engine.start(spec, {"path": str(config)}, "agent")

    assert view.state is RunState.COMPENSATED
    assert view.run.failed_step == "wipe"
    assert view.run.error["code"] == "policy.denied"
    assert view.step("wipe").state is StepState.FAILED
    assert view.step("update").state is StepState.COMPENSATED
    assert ("wipe", str(config)) not in env.effects.log
    assert env.effects.log == [("write", str(config)), ("restore", str(config))]
    assert config.read_text() == "version=1\n"
    assert env.ledger.verify().ok
    calls = [
        (r.event.capability_id, r.event.decision, r.event.rule_id, r.event.outcome)
        for r in env.ledger.records()
        if r.event.run_id == view.run.id and r.event.kind == "invocation"
    ]
    assert calls == [
        ("files.write", "ALLOW", "allow-rest", "ok"),
        ("ops.wipe", "DENY", "no-high-risk", "policy.denied"),
        ("files.restore", "ALLOW", "allow-rest", "ok"),
    ]


def test_an_approved_workflow_whose_later_step_fails_is_undone_in_reverse_byte_for_byte(
    env: WfEnv, tmp_path: Path
) -> None:
    files = {name: env.root / name for name in ("a.conf", "b.conf", "c.conf")}
    originals = {"a.conf": b"alpha\x00\n", "b.conf": b"beta \xe2\x9c\x93\n"}
    for name, data in originals.items():
        files[name].write_bytes(data)
    before = {name: path.read_bytes() if path.exists() else None for name, path in files.items()}
    env.effects.fail_times["web"] = 5
    spec = (
        WorkflowBuilder("release", description="write configs, deploy, verify")
        .input("a", "string")
        .input("b", "string")
        .input("c", "string")
        .step("write_a", "files.write", path="{{ inputs.a }}", content="alpha=2\n")
        .step("write_b", "files.write", path="{{ inputs.b }}", content="beta=2\n")
        .step(
            "deploy",
            "ops.deploy",
            service="web",
            compensation={"none": True},
        )
        .step(
            "write_c",
            "files.write",
            path="{{ inputs.c }}",
            content="{{ steps.write_a.output.path }}",
        )
        .step(
            "verify",
            "ops.check",
            service="web",
            retry={"count": 2, "backoff_s": 0.0},
        )
        .build()
    )
    inputs = {name[0]: str(path) for name, path in files.items()}

    paused = env.engine.start(spec, inputs, "agent")

    assert paused.state is RunState.WAITING_APPROVAL
    approval_id = paused.step("deploy").approval_id
    assert approval_id is not None
    assert ("deploy", "web") not in env.effects.log
    env.approvals.approve(approval_id, "bob", comment="ship it")

    finished = env.engine.resume(paused.run.id)

    assert finished.state is RunState.COMPENSATED
    assert finished.run.failed_step == "verify"
    assert finished.step("verify").attempt == 3
    assert finished.step("verify").state is StepState.FAILED
    assert [finished.step(s).state for s in ("write_a", "write_b", "deploy", "write_c")] == [
        StepState.COMPENSATED,
        StepState.COMPENSATED,
        StepState.NOT_COMPENSATED,
        StepState.COMPENSATED,
    ]
    assert {finished.step(s).undo_capability for s in ("write_a", "write_b", "write_c")} == {
        "files.restore"
    }
    assert env.effects.log == [
        ("write", inputs["a"]),
        ("write", inputs["b"]),
        ("deploy", "web"),
        ("write", inputs["c"]),
        ("restore", inputs["c"]),
        ("restore", inputs["b"]),
        ("restore", inputs["a"]),
    ]
    after = {name: path.read_bytes() if path.exists() else None for name, path in files.items()}
    assert after == before

    report = env.ledger.verify()
    assert report.ok
    story = env.kinds(paused.run.id)
    assert story[0] == "workflow.started"
    assert "workflow.waiting_approval" in story
    assert story.index("workflow.waiting_approval") < story.index("workflow.approved")
    assert story.count("workflow.step_retry") == 2
    assert story.index("workflow.approved") < story.index("workflow.step_failed")
    assert story[-1] == "workflow.compensated"
    failed = next(r.event for r in env.ledger.records() if r.event.kind == "workflow.step_failed")
    assert failed.details["step_id"] == "verify"
    assert failed.outcome == "execution.failed"
    approvals = [r.event for r in env.ledger.records() if r.event.kind == "approval.approved"]
    assert [e.principal for e in approvals] == ["bob"]
    compensations = [
        r.event.details.get("step_id")
        for r in env.ledger.records()
        if r.event.run_id == paused.run.id
        and r.event.kind == "invocation"
        and r.event.capability_id == "files.restore"
    ]
    assert compensations == ["write_c", "write_b", "write_a"]
