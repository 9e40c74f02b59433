"""Approvals: durable, bound to the exact request, decided by others, consumed once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from invocation_env import Env, policy_engine

from aifr.capabilities import CapabilityRegistry, capability
from aifr.errors import ApprovalError, ErrorCode, InputValidationError
from aifr.invocation import ApprovalStatus, CallOptions, Result, Runtime, Status

TRANSFER = {"to": "mallory", "amount": 100}


def ask(env: Env, inputs: dict[str, object] | None = None, principal: str = "alice") -> Result:
    return env.runtime.invoke("demo.transfer", inputs or TRANSFER, principal)


def test_require_approval_stores_a_pending_request_and_does_not_execute(env: Env) -> None:
    result = ask(env)
    assert result.status is Status.PENDING_APPROVAL
    assert result.error is not None and result.error.code is ErrorCode.APPROVAL_REQUIRED
    assert result.approval_id is not None and result.audit_id is not None
    record = env.approvals.get(result.approval_id)
    assert record.status is ApprovalStatus.PENDING
    assert record.principal == "alice" and record.inputs == TRANSFER
    assert record.rule_id == "transfers-need-approval"
    assert env.calls.transfers == []


@pytest.mark.parametrize("approver", ["", " bob", "bob\n"])
def test_an_approver_that_is_no_name_is_refused_and_nothing_is_recorded(
    env: Env, approver: str
) -> None:
    approval_id = ask(env).approval_id
    assert approval_id is not None

    for decide in (env.approvals.approve, env.approvals.reject):
        with pytest.raises(InputValidationError) as refused:
            decide(approval_id, approver)
        assert refused.value.errors[0].path == "approver"

    assert env.approvals.get(approval_id).status is ApprovalStatus.PENDING
    assert env.approvals.get(approval_id).votes == ()


def test_asking_again_while_pending_returns_the_same_request(env: Env) -> None:
    first, second = ask(env), ask(env)
    assert first.approval_id == second.approval_id
    assert len(env.approvals.list(status=ApprovalStatus.PENDING)) == 1
    assert second.audit_id is not None and second.audit_id != first.audit_id


def test_approved_request_executes_once_and_replay_is_refused(env: Env) -> None:
    approval_id = ask(env).approval_id
    assert approval_id is not None
    assert env.approvals.approve(approval_id, "bob").status is ApprovalStatus.APPROVED
    done = env.runtime.invoke(
        "demo.transfer", TRANSFER, "alice", CallOptions(approval_id=approval_id)
    )
    assert done.status is Status.OK and done.output == {"sent": 100, "to": "mallory"}
    again = env.runtime.invoke(
        "demo.transfer", TRANSFER, "alice", CallOptions(approval_id=approval_id)
    )
    assert again.error is not None and again.error.code is ErrorCode.APPROVAL_CONSUMED
    assert env.calls.transfers == [TRANSFER]
    record = env.approvals.get(approval_id)
    assert record.status is ApprovalStatus.CONSUMED
    assert record.result is not None and record.result["status"] == "ok"


def test_the_stored_result_names_the_audit_record_of_its_execution(env: Env) -> None:
    approval_id = ask(env).approval_id
    assert approval_id is not None
    env.approvals.approve(approval_id, "bob")
    done = env.runtime.invoke(
        "demo.transfer", TRANSFER, "alice", CallOptions(approval_id=approval_id)
    )
    assert done.audit_id is not None
    stored = env.approvals.get(approval_id).result
    assert stored is not None
    assert (stored["audit_id"], stored["audit_seq"]) == (done.audit_id, done.audit_seq)
    assert env.ledger.get(str(done.audit_id)) is not None
    assert env.ledger.verify().ok


def test_executing_before_approval_stays_pending(env: Env) -> None:
    approval_id = ask(env).approval_id
    waiting = env.runtime.invoke(
        "demo.transfer", TRANSFER, "alice", CallOptions(approval_id=approval_id)
    )
    assert waiting.status is Status.PENDING_APPROVAL and waiting.approval_id == approval_id
    assert env.calls.transfers == []


def test_changed_inputs_or_principal_need_a_new_approval(env: Env) -> None:
    approval_id = ask(env).approval_id
    assert approval_id is not None
    env.approvals.approve(approval_id, "bob")
    changed = env.runtime.invoke(
        "demo.transfer",
        {"to": "mallory", "amount": 9999},
        "alice",
        CallOptions(approval_id=approval_id),
    )
    assert changed.error is not None and changed.error.code is ErrorCode.APPROVAL_DIGEST_MISMATCH
    other = env.runtime.invoke(
        "demo.transfer", TRANSFER, "eve", CallOptions(approval_id=approval_id)
    )
    assert other.error is not None and other.error.code is ErrorCode.APPROVAL_DIGEST_MISMATCH
    assert env.calls.transfers == []
    assert env.approvals.get(approval_id).status is ApprovalStatus.APPROVED


def test_a_capability_changed_since_the_approval_needs_a_new_one(env: Env) -> None:
    approval_id = ask(env).approval_id
    assert approval_id is not None
    env.approvals.approve(approval_id, "bob")

    @capability("demo.transfer", operation="WRITE", risk="MEDIUM")
    def transfer(to: str, amount: int) -> dict[str, object]:
        """Move money, and a little more (a new fingerprint)."""
        raise AssertionError("an approval of the old capability must not run the new one")

    redeployed = Runtime(
        CapabilityRegistry([transfer]), policy_engine(), env.ledger, approvals=env.approvals
    )
    try:
        result = redeployed.invoke(
            "demo.transfer", TRANSFER, "alice", CallOptions(approval_id=approval_id)
        )
    finally:
        redeployed.close()
    assert result.error is not None and result.error.code is ErrorCode.APPROVAL_DIGEST_MISMATCH
    assert env.approvals.get(approval_id).status is ApprovalStatus.APPROVED
    assert env.runtime.invoke(
        "demo.transfer", TRANSFER, "alice", CallOptions(approval_id=approval_id)
    ).ok


def test_nobody_approves_their_own_request_or_one_made_on_their_behalf(env: Env) -> None:
    approval_id = ask(env, principal="bob").approval_id
    assert approval_id is not None
    with pytest.raises(ApprovalError) as caught:
        env.approvals.approve(approval_id, "bob")
    assert caught.value.code is ErrorCode.APPROVAL_SELF_APPROVAL
    proxied = env.runtime.invoke(
        "demo.transfer", TRANSFER, "agent-7", CallOptions(on_behalf_of=("carol",))
    )
    assert proxied.approval_id is not None
    with pytest.raises(ApprovalError) as caught:
        env.approvals.approve(proxied.approval_id, "carol")
    assert caught.value.code is ErrorCode.APPROVAL_SELF_APPROVAL


def test_an_approver_without_the_role_is_refused_by_policy(env: Env) -> None:
    approval_id = ask(env).approval_id
    assert approval_id is not None
    with pytest.raises(ApprovalError) as caught:
        env.approvals.approve(approval_id, "mallory")
    assert caught.value.code is ErrorCode.APPROVAL_NOT_AUTHORIZED
    assert env.approvals.get(approval_id).status is ApprovalStatus.PENDING


def test_a_rejected_request_cannot_run(env: Env) -> None:
    approval_id = ask(env).approval_id
    assert approval_id is not None
    env.approvals.reject(approval_id, "carol", reason="not today")
    result = env.runtime.invoke(
        "demo.transfer", TRANSFER, "alice", CallOptions(approval_id=approval_id)
    )
    assert result.error is not None and result.error.code is ErrorCode.APPROVAL_REJECTED
    with pytest.raises(ApprovalError) as caught:
        env.approvals.approve(approval_id, "bob")
    assert caught.value.code is ErrorCode.APPROVAL_REJECTED


def test_an_expired_request_is_marked_and_refused(env: Env) -> None:
    approval_id = ask(env).approval_id
    assert approval_id is not None
    env.clock[0] += 601
    with pytest.raises(ApprovalError) as caught:
        env.approvals.approve(approval_id, "bob")
    assert caught.value.code is ErrorCode.APPROVAL_EXPIRED
    assert env.approvals.get(approval_id).status is ApprovalStatus.EXPIRED
    assert [r.id for r in env.approvals.list(status=ApprovalStatus.EXPIRED)] == [approval_id]


def test_an_approved_but_expired_request_cannot_run(env: Env) -> None:
    approval_id = ask(env).approval_id
    assert approval_id is not None
    env.approvals.approve(approval_id, "bob")
    env.clock[0] += 601
    result = env.runtime.invoke(
        "demo.transfer", TRANSFER, "alice", CallOptions(approval_id=approval_id)
    )
    assert result.error is not None and result.error.code is ErrorCode.APPROVAL_EXPIRED
    assert env.calls.transfers == []


def test_a_quorum_needs_that_many_different_approvers(env: Env) -> None:
    pending = env.runtime.invoke("demo.wire", {"amount": 5}, "alice")
    approval_id = pending.approval_id
    assert approval_id is not None
    assert env.approvals.approve(approval_id, "bob").status is ApprovalStatus.PENDING
    with pytest.raises(ApprovalError) as caught:
        env.approvals.approve(approval_id, "bob")
    assert caught.value.code is ErrorCode.APPROVAL_ALREADY_DECIDED
    assert env.approvals.approve(approval_id, "carol").status is ApprovalStatus.APPROVED
    done = env.runtime.invoke(
        "demo.wire", {"amount": 5}, "alice", CallOptions(approval_id=approval_id)
    )
    assert done.output == {"wired": 5}


def test_unknown_approval_ids_are_not_found(env: Env) -> None:
    with pytest.raises(ApprovalError) as caught:
        env.approvals.approve("ap-nope", "bob")
    assert caught.value.code is ErrorCode.APPROVAL_NOT_FOUND
    result = env.runtime.invoke(
        "demo.transfer", TRANSFER, "alice", CallOptions(approval_id="ap-nope")
    )
    assert result.error is not None and result.error.code is ErrorCode.APPROVAL_NOT_FOUND


def race_once(env: Env, amount: int) -> None:
    """Two approvers and two executions of one request start at the same moment."""
    env.calls.transfers.clear()
    inputs = {"to": "x", "amount": amount}
    approval_id = ask(env, inputs).approval_id
    assert approval_id is not None
    barrier = threading.Barrier(4)

    def outcome(result: Result) -> str:
        return result.status.value if result.error is None else result.error.code.value

    def approve(approver: str) -> str:
        barrier.wait(5)
        try:
            return env.approvals.approve(approval_id, approver).status.value
        except ApprovalError as exc:
            return exc.code.value

    def execute() -> str:
        barrier.wait(5)
        return outcome(
            env.runtime.invoke(
                "demo.transfer", inputs, "alice", CallOptions(approval_id=approval_id)
            )
        )

    with ThreadPoolExecutor(4) as pool:
        approvals = [pool.submit(approve, who) for who in ("bob", "carol")]
        executions = [pool.submit(execute) for _ in range(2)]
        decided = sorted(f.result() for f in approvals)
        outcomes = [f.result() for f in executions]
    assert decided[1] == "approved"
    assert decided[0] in ("approval.already_decided", "approval.consumed")
    if "ok" not in outcomes:  # both executions came before the approval landed
        outcomes.append(
            outcome(
                env.runtime.invoke(
                    "demo.transfer", inputs, "alice", CallOptions(approval_id=approval_id)
                )
            )
        )
    assert outcomes.count("ok") == 1
    assert set(outcomes) - {"ok"} <= {"approval.consumed", "approval.required"}
    assert env.calls.transfers == [inputs]


def test_exactly_one_execution_when_approved_and_executed_twice_concurrently(env: Env) -> None:
    for amount in range(1, 6):
        race_once(env, amount)


def test_every_approval_decision_is_audited(env: Env) -> None:
    approval_id = ask(env).approval_id
    assert approval_id is not None
    env.approvals.approve(approval_id, "bob")
    env.runtime.invoke("demo.transfer", TRANSFER, "alice", CallOptions(approval_id=approval_id))
    kinds = [(row["kind"], row["outcome"]) for row in env.audit_rows()]
    assert kinds == [
        ("invocation", "approval.required"),
        ("approval.approved", "approved"),
        ("invocation", "ok"),
    ]
