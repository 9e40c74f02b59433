"""PolicyEngine: reloads, grants, approvers, delegation, rate limits, explain and lint."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aifr.capabilities import CapabilitySpec, OperationType, Risk, RiskLevel
from aifr.errors import ApprovalError, ErrorCode, PolicyError, StorageError
from aifr.policy import (
    Decision,
    InMemoryGrantStore,
    PolicyChange,
    PolicyDecision,
    PolicyEngine,
    PolicyRequest,
    load_policy_text,
    loader,
)
from aifr.policy.cases import ManualClock
from aifr.policy.explain import explain
from aifr.policy.lint import lint_directory, lint_policy
from aifr.policy.loader import directory_digest

RBAC = """\
version: 1
roles:
  approver: {principals: [erin]}
  admin: {principals: [root], inherits: [approver]}
approvals:
  - {risk: HIGH, roles: [approver]}
rate_limits:
  - {name: writes, when: {capability: "notes.*"}, limit: 3, per_s: 1}
rules:
  - id: reads
    when: {operation: READ}
    decision: ALLOW
  - id: writes-need-approval
    when: {operation: WRITE, risk_at_least: HIGH}
    decision: REQUIRE_APPROVAL
    reason: risky write
"""

WRITE = CapabilitySpec(
    id="io.fs.write_file", operation_type=OperationType.WRITE, risk=Risk(level=RiskLevel.HIGH)
)
READ = CapabilitySpec(
    id="io.fs.read", operation_type=OperationType.READ, risk=Risk(level=RiskLevel.LOW)
)


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    done = threading.Event()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        done.wait(0.02)
    return condition()


def engine_for(text: str = RBAC, **kwargs: object) -> PolicyEngine:
    return PolicyEngine(load_policy_text([("p.yaml", text)]), **kwargs)  # type: ignore[arg-type]


def test_reload_keeps_the_last_good_policy_when_a_file_breaks(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(RBAC)
    engine = PolicyEngine.from_directory(tmp_path)
    (tmp_path / "p.yaml").write_text("version: 1\nrules:\n  - id: x\n    decision: MAYBE\n")
    with pytest.raises(PolicyError) as info:
        engine.reload()
    assert info.value.code is ErrorCode.POLICY_INVALID
    assert engine.decide(PolicyRequest("u", READ, {})).rule_id == "reads"
    assert engine.reload_if_changed() is False  # the broken version is not retried


def test_reload_if_changed_puts_a_new_policy_in_force(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(RBAC)
    engine = PolicyEngine.from_directory(tmp_path)
    assert engine.reload_if_changed() is False
    (tmp_path / "p.yaml").write_text("version: 1\nrules:\n  - id: deny-reads\n    decision: DENY\n")
    assert engine.reload_if_changed() is True
    assert engine.decide(PolicyRequest("u", READ, {})).rule_id == "deny-reads"


def test_the_watcher_thread_reloads_a_changed_policy(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(RBAC)
    engine = PolicyEngine.from_directory(tmp_path)
    engine.start_watching(interval_s=0.02)
    try:
        (tmp_path / "p.yaml").write_text(
            "version: 1\nrules:\n  - id: deny-all\n    decision: DENY\n"
        )
        assert wait_until(lambda: engine.decide(PolicyRequest("u", READ, {})).rule_id == "deny-all")
    finally:
        engine.stop_watching()


def test_every_change_that_takes_effect_is_announced_and_a_failed_reload_is_not(
    tmp_path: Path,
) -> None:
    (tmp_path / "p.yaml").write_text(RBAC)
    engine = PolicyEngine.from_directory(tmp_path, grants=InMemoryGrantStore())
    changes: list[PolicyChange] = []
    engine.on_change(changes.append)
    (tmp_path / "p.yaml").write_text("version: 1\nrules:\n  - id: x\n    decision: MAYBE\n")
    with pytest.raises(PolicyError):
        engine.reload()
    assert changes == []
    (tmp_path / "p.yaml").write_text(RBAC)
    engine.reload(actor="ops")
    grant = engine.issue_grant(
        approver="erin", principal="alice", capability="io.fs.*", risk=RiskLevel.HIGH, ttl_s=60
    )
    engine.revoke_grant(grant.id, revoked_by="root")
    assert [(c.key, c.action, c.actor) for c in changes] == [
        ("policy", "reloaded", "ops"),
        ("policy.grants", "issued", "erin"),
        ("policy.grants", "revoked", "root"),
    ]
    reloaded, issued, revoked = changes
    assert reloaded.details["files"] == ["p.yaml"]
    assert reloaded.details["rules"] == 2
    assert reloaded.details["digest"] == directory_digest(tmp_path)
    assert issued.details["id"] == revoked.details["id"] == grant.id
    assert revoked.details["revoked_by"] == "root"


def test_a_listener_failing_after_a_hot_reload_leaves_the_new_policy_in_force(
    tmp_path: Path,
) -> None:
    (tmp_path / "p.yaml").write_text(RBAC)
    engine = PolicyEngine.from_directory(tmp_path)

    def broken(change: PolicyChange) -> None:
        raise StorageError("ledger is read-only")

    engine.on_change(broken)
    (tmp_path / "p.yaml").write_text("version: 1\nrules:\n  - id: deny-reads\n    decision: DENY\n")
    assert engine.reload_if_changed() is True
    assert engine.decide(PolicyRequest("u", READ, {})).rule_id == "deny-reads"


def test_a_grant_turns_approval_into_allow_until_revoked() -> None:
    engine = engine_for(grants=InMemoryGrantStore())
    request = PolicyRequest("alice", WRITE, {"path": "/srv/a"})
    assert engine.decide(request).decision is Decision.REQUIRE_APPROVAL
    grant = engine.issue_grant(
        approver="erin",
        principal="alice",
        capability="io.fs.*",
        risk=RiskLevel.HIGH,
        ttl_s=60,
        constraints={"path": {"under": "/srv"}},
    )
    allowed = engine.decide(request)
    assert allowed.decision is Decision.ALLOW
    assert allowed.grant_id == grant.id
    assert grant.id in allowed.reason and "erin" in allowed.reason
    assert engine.decide(PolicyRequest("alice", WRITE, {"path": "/etc"})).grant_id is None
    engine.revoke_grant(grant.id, revoked_by="erin")
    assert engine.decide(request).decision is Decision.REQUIRE_APPROVAL


def test_a_grant_expires() -> None:
    wall = ManualClock(1000.0)
    engine = engine_for(grants=InMemoryGrantStore(), wall_clock=wall)
    engine.issue_grant(
        approver="erin", principal="alice", capability="*", risk=RiskLevel.HIGH, ttl_s=10
    )
    request = PolicyRequest("alice", WRITE, {})
    assert engine.decide(request).decision is Decision.ALLOW
    wall.advance(10)
    assert engine.decide(request).decision is Decision.REQUIRE_APPROVAL


def test_nobody_issues_a_grant_to_themselves() -> None:
    engine = engine_for(grants=InMemoryGrantStore())
    with pytest.raises(ApprovalError) as info:
        engine.issue_grant(
            approver="erin", principal="erin", capability="*", risk=RiskLevel.HIGH, ttl_s=10
        )
    assert info.value.code is ErrorCode.APPROVAL_SELF_APPROVAL


def test_only_authorized_approvers_issue_grants() -> None:
    engine = engine_for(grants=InMemoryGrantStore())
    with pytest.raises(ApprovalError) as info:
        engine.issue_grant(
            approver="mallory", principal="alice", capability="*", risk=RiskLevel.HIGH, ttl_s=10
        )
    assert info.value.code is ErrorCode.APPROVAL_NOT_AUTHORIZED


def test_grants_with_invalid_constraints_or_ttl_are_refused() -> None:
    engine = engine_for(grants=InMemoryGrantStore())
    with pytest.raises(PolicyError):
        engine.issue_grant(
            approver="erin",
            principal="alice",
            capability="*",
            risk=RiskLevel.HIGH,
            ttl_s=10,
            constraints={"path": {"regex": "("}},
        )
    with pytest.raises(PolicyError):
        engine.issue_grant(
            approver="erin", principal="alice", capability="*", risk=RiskLevel.HIGH, ttl_s=0
        )


@pytest.mark.parametrize("capability", ["", "io.[fs*", "db.[z-a]"])
def test_a_grant_for_an_invalid_capability_glob_is_refused_and_not_stored(
    capability: str,
) -> None:
    store = InMemoryGrantStore()
    engine = engine_for(grants=store)
    with pytest.raises(PolicyError) as info:
        engine.issue_grant(
            approver="erin", principal="alice", capability=capability, risk=RiskLevel.HIGH, ttl_s=10
        )
    assert info.value.code is ErrorCode.POLICY_INVALID
    assert info.value.details["field"] == "capability"
    assert store.list() == []


def test_revoking_an_unknown_grant_names_it() -> None:
    engine = engine_for(grants=InMemoryGrantStore())
    with pytest.raises(PolicyError) as info:
        engine.revoke_grant("g-missing", revoked_by="erin")
    assert info.value.code is ErrorCode.POLICY_GRANT_NOT_FOUND


def test_roles_of_follows_inheritance() -> None:
    engine = engine_for()
    assert engine.roles_of("root") == frozenset({"admin", "approver"})
    assert engine.roles_of("nobody") == frozenset()


def test_token_roles_can_authorize_an_approver() -> None:
    engine = engine_for()
    decision = PolicyDecision(Decision.REQUIRE_APPROVAL, "r", "x", ("approver",))
    with pytest.raises(ApprovalError):
        engine.check_approver(approver="tok", requester="a", risk=RiskLevel.HIGH, decision=decision)
    engine.check_approver(
        approver="tok",
        requester="a",
        risk=RiskLevel.HIGH,
        decision=decision,
        approver_roles=frozenset({"admin"}),
    )


def test_high_risk_without_configured_approvers_cannot_be_approved() -> None:
    engine = engine_for("version: 1\n")
    decision = PolicyDecision(Decision.REQUIRE_APPROVAL, None, "x")
    with pytest.raises(ApprovalError) as info:
        engine.check_approver(approver="b", requester="a", risk=RiskLevel.HIGH, decision=decision)
    assert info.value.code is ErrorCode.APPROVAL_NOT_AUTHORIZED
    engine.check_approver(approver="b", requester="a", risk=RiskLevel.MEDIUM, decision=decision)


def test_decisions_keep_one_order_of_approver_roles() -> None:
    decision = PolicyDecision(Decision.REQUIRE_APPROVAL, "r", "x", frozenset({"b", "a"}))  # type: ignore[arg-type]  # stored records pass sets
    assert decision.approver_roles == ("a", "b")
    assert not decision.allowed
    assert PolicyDecision(Decision.ALLOW, None, "x").allowed


def test_rate_limits_hold_across_threads() -> None:
    clock = ManualClock()
    engine = engine_for(clock=clock)
    low_write = CapabilitySpec(
        id="notes.save", operation_type=OperationType.WRITE, risk=Risk(level=RiskLevel.LOW)
    )
    request = PolicyRequest("alice", low_write, {})
    results: list[PolicyDecision] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            answer = engine.decide(request)
            with lock:
                results.append(answer)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    allowed = [r for r in results if r.decision is Decision.ALLOW]
    limited = [r for r in results if r.rule_id == "rate_limit:writes"]
    assert len(allowed) == 3
    assert len(limited) == 37
    assert {r.reason for r in limited} == {"rate_limited"}


def test_explaining_a_request_spends_no_rate_limit_token() -> None:
    engine = engine_for(clock=ManualClock())
    low_write = CapabilitySpec(
        id="notes.save", operation_type=OperationType.WRITE, risk=Risk(level=RiskLevel.LOW)
    )
    request = PolicyRequest("alice", low_write, {})
    for _ in range(5):
        result = explain(engine, request)
    assert result.decision.decision is Decision.ALLOW
    assert any("rate limit writes" in note and "3.0 of 3" in note for note in result.notes)


def test_explain_says_why_each_earlier_rule_did_not_match() -> None:
    result = explain(engine_for(), PolicyRequest("alice", WRITE, {}))
    (link,) = result.links
    assert [t.rule_id for t in link.traces] == ["reads", "writes-need-approval"]
    assert link.traces[0].why_not == "operation WRITE is not READ"
    assert link.traces[1].matched
    assert result.decision.rule_id == "writes-need-approval"
    assert any("skip   reads: operation WRITE is not READ" in line for line in result.lines())


def test_explain_covers_every_link_of_a_delegation_chain() -> None:
    result = explain(engine_for(), PolicyRequest("agent", READ, {}, on_behalf_of=("alice",)))
    assert [link.principal for link in result.links] == ["agent", "alice"]
    assert result.to_dict()["decision"] == "ALLOW"


def test_a_capability_that_requires_approval_is_not_plainly_allowed() -> None:
    spec = CapabilitySpec(
        id="pay.send",
        operation_type=OperationType.READ,
        risk=Risk(level=RiskLevel.LOW, requires_approval=True),
    )
    decision = engine_for().decide(PolicyRequest("alice", spec, {}))
    assert decision.decision is Decision.REQUIRE_APPROVAL
    assert decision.rule_id == "reads"


def test_approvers_outside_the_risk_table_make_a_request_unapprovable() -> None:
    text = (
        RBAC
        + "  - id: odd\n    when: {operation: EXECUTE}\n    decision: REQUIRE_APPROVAL\n    approvers: [admin-only]\n"
    )
    spec = CapabilitySpec(
        id="sys.run", operation_type=OperationType.EXECUTE, risk=Risk(level=RiskLevel.HIGH)
    )
    engine = engine_for(text)
    decision = engine.decide(PolicyRequest("alice", spec, {}))
    assert decision.decision is Decision.DENY
    assert "no role may approve" in decision.reason
    codes = {f.code for f in lint_policy(engine.policy)}
    assert {"no_approvers", "unknown_role"} <= codes


def test_lint_finds_unreachable_and_redundant_rules() -> None:
    text = """\
version: 1
rules:
  - id: all-io
    when: {capability: "io.*"}
    decision: DENY
  - id: fs-write
    when: {capability: "io.fs.*", operation: WRITE}
    decision: ALLOW
  - id: fs-write-dup
    when: {capability: io.fs.write, principal: bob}
    decision: DENY
  - id: net
    when: {capability: "net.*"}
    decision: ALLOW
"""
    findings = {f.rule_id: f for f in lint_policy(load_policy_text([("p.yaml", text)]))}
    assert findings["fs-write"].code == "unreachable"
    assert findings["fs-write"].severity == "error"
    assert findings["fs-write-dup"].code == "redundant"
    assert "net" not in findings


def test_lint_reports_glob_patterns_that_match_no_capability() -> None:
    text = (
        "version: 1\nrules:\n  - id: a\n    when: {capability: 'io.nett.*'}\n    decision: DENY\n"
    )
    findings = lint_policy(load_policy_text([("p.yaml", text)]), known_capabilities=["io.net.get"])
    assert [f.code for f in findings] == ["unknown_capability"]
    assert findings[0].source is not None and findings[0].source.line == 4


def test_lint_turns_load_errors_into_located_findings(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("version: 1\nrules:\n  - id: a\n    decision: NO\n")
    (finding,) = lint_directory(tmp_path)
    assert finding.code == "schema"
    assert finding.source is not None and finding.source.line == 4
    assert finding.to_dict()["field"] == "rules[0].decision"


def test_a_reload_records_the_digest_of_the_bytes_it_compiled_not_of_a_later_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "p.yaml").write_text(RBAC)
    engine = PolicyEngine.from_directory(tmp_path, grants=InMemoryGrantStore())
    compiled = directory_digest(tmp_path)
    changes: list[PolicyChange] = []
    engine.on_change(changes.append)
    real = loader.load_policy_text

    def then_rewritten(sources: Any) -> Any:  # a writer replaces the file mid-reload
        policy = real(sources)
        (tmp_path / "p.yaml").write_text(RBAC + "\n# edited after the read\n")
        return policy

    monkeypatch.setattr(loader, "load_policy_text", then_rewritten)
    engine.reload()

    assert changes[0].details["digest"] == compiled
    assert directory_digest(tmp_path) != compiled
