"""SqliteGrantStore under the policy engine (the store contract: tests/integration/contracts)."""

from __future__ import annotations

from pathlib import Path

from aifr.capabilities import CapabilitySpec, OperationType, Risk, RiskLevel
from aifr.policy import Decision, PolicyEngine, PolicyRequest
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.grants import SqliteGrantStore

POLICY = """\
version: 1
roles:
  approver: {principals: [erin]}
approvals:
  - {risk: HIGH, roles: [approver]}
rules:
  - id: approve-writes
    when: {operation: WRITE}
    decision: REQUIRE_APPROVAL
"""
WRITE = CapabilitySpec(
    id="io.fs.write_file", operation_type=OperationType.WRITE, risk=Risk(level=RiskLevel.HIGH)
)


def test_a_grant_issued_through_the_engine_survives_a_restart(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(POLICY)
    db_path = tmp_path / "aifr.db"
    first = PolicyEngine.from_directory(policies, grants=SqliteGrantStore(SqliteDatabase(db_path)))
    issued = first.issue_grant(
        approver="erin",
        principal="alice",
        capability="io.fs.*",
        risk=RiskLevel.HIGH,
        ttl_s=600,
        constraints={"path": {"under": "/srv"}},
    )
    second = PolicyEngine.from_directory(policies, grants=SqliteGrantStore(SqliteDatabase(db_path)))
    inside = second.decide(PolicyRequest("alice", WRITE, {"path": "/srv/x"}))
    outside = second.decide(PolicyRequest("alice", WRITE, {"path": "/home/x"}))
    assert (inside.decision, inside.grant_id) == (Decision.ALLOW, issued.id)
    assert outside.decision is Decision.REQUIRE_APPROVAL
    second.revoke_grant(issued.id, revoked_by="erin")
    assert second.decide(PolicyRequest("alice", WRITE, {"path": "/srv/x"})).grant_id is None


def test_the_grants_table_is_created_only_when_first_used(tmp_path: Path) -> None:
    db_path = tmp_path / "aifr.db"
    store = SqliteGrantStore(SqliteDatabase(db_path))
    assert not db_path.exists()
    assert store.list() == []
    assert db_path.exists()
