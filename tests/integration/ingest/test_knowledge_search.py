"""``knowledge.search`` through the governed runtime: per-repository policy, audit, explain."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aifr.audit import AuditLedger
from aifr.capabilities import CapabilityRegistry
from aifr.errors import ErrorCode
from aifr.ingest import IndexKey
from aifr.invocation import ApprovalService, CallOptions, Runtime, Status
from aifr.policy import PolicyEngine, load_policy_text
from aifr.stdlib.knowledge import build_knowledge_capabilities
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.approvals import SqliteApprovalStore
from aifr.storage.sqlite.audit import SqliteAuditStore
from aifr.storage.sqlite.chunk_index import SqliteChunkIndex
from ingest_kit import HashingEmbedder, chunk, entry

POLICY = """
version: 1
rules:
  - id: docs-no-salary
    when: {capability: knowledge.search, inputs: {repo: docs, query: {regex: ".*salary.*"}}}
    decision: DENY
    reason: salary questions are not for the docs
  - id: hr-for-hr
    when: {capability: knowledge.search, roles: [hr], inputs: {repo: {glob: "hr-*"}}}
    decision: ALLOW
  - id: hr-private
    when: {capability: knowledge.search, inputs: {repo: {glob: "hr-*"}}}
    decision: DENY
    reason: HR repositories are for the hr role
  - id: legal-needs-approval
    when: {capability: knowledge.search, inputs: {repo: legal}}
    decision: REQUIRE_APPROVAL
    reason: legal documents need a human
"""
SALARY = "salary bands payroll table for every employee"


@dataclass
class Env:
    runtime: Runtime
    ledger: AuditLedger
    index: SqliteChunkIndex
    approvals: ApprovalService


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    embedder = HashingEmbedder()
    index = SqliteChunkIndex(
        tmp_path / "index.db",
        IndexKey(os.urandom(32), source="test"),
        model_id=embedder.model_id,
        dimension=embedder.dimension,
    )
    for repo, path, text in (
        ("docs", "guide/payroll.md", "how the payroll export job runs each month"),
        ("hr-private", "salaries.csv", SALARY),
        ("legal", "contracts/payroll.md", "payroll clauses in employment contracts"),
    ):
        index.replace_file(
            entry(repo, path, text), [chunk(repo, path, text)], embedder.embed([text])
        )
    policy = PolicyEngine(load_policy_text([("rules.yaml", POLICY)]))
    registry = CapabilityRegistry(
        build_knowledge_capabilities(open_index=lambda: (index, embedder), policy=lambda: policy)
    )
    database = SqliteDatabase(tmp_path / "state.db", synchronous="NORMAL")
    ledger = AuditLedger(SqliteAuditStore(database))
    approvals = ApprovalService(SqliteApprovalStore(database, ledger), policy, default_ttl_s=600)
    runtime = Runtime(registry, policy, ledger, approvals=approvals, default_timeout_s=30)
    yield Env(runtime, ledger, index, approvals)
    runtime.close()
    index.close()
    database.close()


def _repos(output: dict[str, object]) -> dict[str, dict[str, object]]:
    return {r["repo"]: r for r in output["repos"]}  # type: ignore[attr-defined,index]


def test_a_denied_repository_is_never_searched_and_explain_names_the_rule(env: Env) -> None:
    result = env.runtime.invoke("knowledge.search", {"query": "payroll export"}, "agent-1")
    assert result.status is Status.OK
    output = result.output
    assert {h["repo"] for h in output["hits"]} == {"docs"}
    repos = _repos(output)
    assert repos["docs"]["searched"] is True
    assert repos["hr-private"]["searched"] is False
    assert repos["hr-private"]["rule"] == "hr-private"
    assert "HR repositories are for the hr role" in repos["hr-private"]["explain"]
    assert repos["legal"]["decision"] == "REQUIRE_APPROVAL"
    assert repos["legal"]["searched"] is False
    assert SALARY not in json.dumps(result.to_dict())


def test_the_callers_roles_open_the_repositories_their_rule_allows(env: Env) -> None:
    result = env.runtime.invoke(
        "knowledge.search", {"query": "salary bands"}, "carol", CallOptions(roles=frozenset({"hr"}))
    )
    assert result.status is Status.OK
    assert result.output["hits"][0]["repo"] == "hr-private"
    assert _repos(result.output)["hr-private"]["rule"] == "hr-for-hr"


def test_asking_for_a_denied_repository_by_name_is_denied_before_anything_runs(env: Env) -> None:
    result = env.runtime.invoke(
        "knowledge.search", {"query": "salary", "repo": "hr-private"}, "agent-1"
    )
    assert result.status is Status.DENIED
    assert result.error is not None
    assert result.error.code is ErrorCode.POLICY_DENIED
    assert result.decision is not None
    assert result.decision.rule_id == "hr-private"


def test_an_unknown_repository_is_a_clear_error(env: Env) -> None:
    result = env.runtime.invoke("knowledge.search", {"query": "x", "repo": "nope"}, "agent-1")
    assert result.status is Status.FAILED
    assert result.error is not None
    assert result.error.code is ErrorCode.INGEST_REPO_NOT_FOUND
    assert "docs" in result.error.message


def test_every_search_is_audited_with_its_principal_and_outcome(env: Env) -> None:
    result = env.runtime.invoke("knowledge.search", {"query": "payroll export"}, "agent-7")
    records = [r.to_dict() for r in env.ledger.records()]
    searches = [r for r in records if r.get("capability_id") == "knowledge.search"]
    assert len(searches) == 1, records
    assert searches[0]["principal"] == "agent-7"
    assert searches[0]["outcome"] == "ok"
    assert result.audit_id == searches[0]["id"]


def test_a_query_over_the_size_cap_is_refused_by_the_schema(env: Env) -> None:
    result = env.runtime.invoke("knowledge.search", {"query": "x" * 5000}, "agent-1")
    assert result.error is not None
    assert result.error.code is ErrorCode.INPUT_INVALID


def test_a_repository_that_needs_approval_is_searched_once_a_human_approved_the_call(
    env: Env,
) -> None:
    inputs = {"query": "payroll clauses", "repo": "legal"}
    asked = env.runtime.invoke("knowledge.search", inputs, "agent-1")
    assert asked.status is Status.PENDING_APPROVAL
    assert asked.approval_id is not None
    env.approvals.approve(asked.approval_id, "bob")
    done = env.runtime.invoke(
        "knowledge.search", inputs, "agent-1", CallOptions(approval_id=asked.approval_id)
    )
    assert done.status is Status.OK, done.error
    assert [h["path"] for h in done.output["hits"]] == ["contracts/payroll.md"]
    assert _repos(done.output)["legal"]["explain"] == "searched"


def test_each_repository_is_decided_with_the_calls_own_query(env: Env) -> None:
    asked = env.runtime.invoke("knowledge.search", {"query": "salary of the payroll"}, "agent-1")
    assert asked.status is Status.OK
    docs = _repos(asked.output)["docs"]
    assert (docs["searched"], docs["rule"]) == (False, "docs-no-salary")
    other = env.runtime.invoke("knowledge.search", {"query": "payroll export job"}, "agent-1")
    assert _repos(other.output)["docs"]["searched"] is True
