"""Separation of duties: ``quorum_roles`` asks for distinct approvers from several roles."""

from __future__ import annotations

from pathlib import Path

from aifr.capabilities import CapabilitySpec, OperationType, Risk, RiskLevel
from aifr.policy import PolicyEngine, PolicyRequest, load_policy_text, missing_votes
from aifr.policy.cases import load_case_table, run_case_table
from aifr.policy.explain import explain
from aifr.policy.lint import lint_policy

POLICY = """\
version: 1
roles:
  admin: {principals: [ann, amy]}
  security: {principals: [sam]}
  both: {principals: [bo], inherits: [admin, security]}
  auditor: {principals: []}
rules:
  - id: wires-need-two-duties
    when: {capability: bank.wire}
    decision: REQUIRE_APPROVAL
    reason: money leaves
    approvers: [admin]
    quorum_roles: {admin: 1, security: 1}
  - id: audits-need-an-auditor
    when: {capability: bank.audit}
    decision: REQUIRE_APPROVAL
    quorum_roles: {auditor: 1}
approvals:
  - {risk: HIGH, roles: [admin, security]}
"""

WIRE = CapabilitySpec(
    id="bank.wire", operation_type=OperationType.WRITE, risk=Risk(level=RiskLevel.HIGH)
)


def _engine() -> PolicyEngine:
    return PolicyEngine(load_policy_text([("policies/bank.yaml", POLICY)]))


def test_a_rule_with_quorum_roles_asks_for_each_role_and_raises_the_quorum() -> None:
    decision = _engine().decide(PolicyRequest("ann", WIRE, {}))
    assert decision.quorum_roles == (("admin", 1), ("security", 1))
    assert decision.quorum == 2
    assert set(decision.approver_roles) == {"admin", "security"}


def test_two_admins_do_not_meet_an_admin_and_security_quorum() -> None:
    admin, security = frozenset({"admin"}), frozenset({"security"})
    needs = (("admin", 1), ("security", 1))
    assert missing_votes([admin], needs, 2) == {"security": 1}
    assert missing_votes([admin, admin], needs, 2) == {"security": 1}
    assert missing_votes([admin, security], needs, 2) == {}
    assert missing_votes([], needs, 2) == {"admin": 1, "security": 1}


def test_one_approver_holding_both_roles_counts_once() -> None:
    both, admin = frozenset({"admin", "security"}), frozenset({"admin"})
    needs = (("admin", 1), ("security", 1))
    assert sum(missing_votes([both], needs, 2).values()) == 1
    assert missing_votes([both, admin], needs, 2) == {}  # both fills security, admin admin


def test_explain_shows_the_separation_of_duties() -> None:
    lines = explain(_engine(), PolicyRequest("ann", WIRE, {})).lines()
    assert "separation of duties: needs 1 admin, 1 security (distinct approvers)" in lines


def test_policy_check_warns_when_no_principal_holds_a_quorum_role() -> None:
    findings = lint_policy(load_policy_text([("policies/bank.yaml", POLICY)]))
    unheld = [f for f in findings if f.code == "quorum_role_unheld"]
    assert [(f.rule_id, "'auditor'" in f.message) for f in unheld] == [
        ("audits-need-an-auditor", True)
    ]


def test_policy_test_votes_in_turn_pending_then_approved(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "bank.yaml").write_text(POLICY)
    table = tmp_path / "cases.yaml"
    table.write_text(
        """\
version: 1
policy: policies
capabilities:
  - {id: bank.wire, operation: WRITE, risk: HIGH}
cases:
  - name: an admin, another admin, then security
    principal: carl
    capability: bank.wire
    expect: {decision: REQUIRE_APPROVAL, quorum_roles: {admin: 1, security: 1}}
    votes: [ann, amy, sam]
    expect_votes: [pending, pending, approved]
  - name: the requester never counts
    principal: ann
    capability: bank.wire
    expect: REQUIRE_APPROVAL
    votes: [ann, sam, amy]
    expect_votes: [approval.self_approval, pending, approved]
  - name: a wrong expectation fails
    principal: carl
    capability: bank.wire
    expect: REQUIRE_APPROVAL
    votes: [ann, amy]
    expect_votes: [pending, approved]
"""
    )
    results = run_case_table(load_case_table(table))
    assert [r.passed for r in results] == [True, True, False]
    assert "votes: expected ['pending', 'approved'], got ['pending', 'pending']" in (
        results[2].problems
    )
    assert "quorum_roles=admin:1,security:1" in results[0].actual
