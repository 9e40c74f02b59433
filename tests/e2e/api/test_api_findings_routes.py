"""``/v1/findings`` and ``/v1/knowledge`` over real HTTP: governed reads, triage, import, export.

A project of its own (the shared harness's policy plus findings rules): alice may
triage and import, the agent may only read, and every act lands in the audit ledger
with the token's principal.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_harness import POLICY, Server, make_project, mint, start_server

NUCLEI = Path(__file__).parents[2] / "fixtures" / "findings" / "nuclei"
FINDINGS_RULES = """\
  - id: alice-triages
    when: {capability: "findings.triage", principal: "alice"}
    decision: ALLOW
    reason: alice is the security lead
  - id: bob-triage-needs-approval
    when: {capability: "findings.triage", principal: "bob"}
    decision: REQUIRE_APPROVAL
    reason: bob's triage is reviewed
    approvers: [approver]
  - id: agents-do-not-triage
    when: {capability: "findings.triage"}
    decision: DENY
    reason: people triage findings
  - id: alice-imports
    when: {capability: ["api.findings.*", "findings.import"], principal: "alice"}
    decision: ALLOW
    reason: alice runs the scanners
  - id: nobody-else-imports
    when: {capability: ["api.findings.*", "findings.import"]}
    decision: DENY
    reason: imports and exports are for the security lead
"""


@pytest.fixture(scope="module")
def findings_server(
    aifr_bin: str, tmp_path_factory: pytest.TempPathFactory, api_env: dict[str, str]
) -> Iterator[Server]:
    project = make_project(aifr_bin, tmp_path_factory.mktemp("findings"), api_env)
    policy = POLICY.replace("rules:\n", "rules:\n" + FINDINGS_RULES, 1)
    (project / "policies" / "default.yaml").write_text(policy)
    running = start_server(aifr_bin, project, api_env)
    running.tokens = {
        who: mint(aifr_bin, project, api_env, who) for who in ("agent", "alice", "bob")
    }
    yield running
    running.stop()
    print(running.stderr)


def _import(server: Server, who: str, name: str) -> object:
    with server.client(who) as client:
        return client.post(
            "/v1/findings/webapp/import",
            params={"scanner": "nuclei", "run": f"run-{name[:10]}"},
            content=(NUCLEI / name).read_bytes(),
            headers={"content-type": "application/octet-stream"},
        )


def test_import_list_show_triage_and_export_through_the_api(findings_server: Server) -> None:
    imported = _import(findings_server, "alice", "nuclei-v3.3-recent-keys.jsonl")
    assert imported.status_code == 201, imported.text
    summary = imported.json()
    assert summary["project"] == "webapp"
    assert summary["imported"] >= 1
    with findings_server.client("agent") as agent:
        page = agent.get("/v1/findings/webapp").json()
        assert 1 <= len(page["findings"]) <= summary["imported"]
        critical = agent.get("/v1/findings/webapp", params={"severity": "critical"}).json()
        assert critical["findings"]
        assert {f["severity"] for f in critical["findings"]} == {"critical"}
        assert agent.get("/v1/findings/webapp", params={"scanner": "katana"}).json() == {
            "findings": [],
            "next_cursor": None,
        }
        first = page["findings"][0]["id"]
        shown = agent.get(f"/v1/findings/webapp/{first}").json()
        assert shown["id"] == first
        assert shown["triage_history"] == []
        refused = agent.post(
            f"/v1/findings/webapp/{first}/triage", json={"state": "accepted", "reason": "noise"}
        )
        assert refused.status_code == 403
        assert refused.json()["code"] == "policy.denied"
        assert refused.headers["content-type"] == "application/problem+json"
    with findings_server.client("alice") as alice:
        done = alice.post(
            f"/v1/findings/webapp/{first}/triage",
            json={"state": "false_positive", "reason": "test server"},
        )
        assert done.status_code == 200, done.text
        assert done.json()["to_state"] == "false_positive"
        assert done.json()["actor"] == "alice"
        states = alice.get("/v1/findings/webapp", params={"triage_state": "false_positive"}).json()
        assert [f["id"] for f in states["findings"]] == [first]
        exported = alice.get("/v1/findings/webapp/export", params={"format": "csv"})
        assert exported.status_code == 200
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert len(rows) == len(page["findings"])
        sarif = alice.get("/v1/findings/webapp/export", params={"format": "sarif"}).json()
        assert sarif["version"] == "2.1.0"
        audit = alice.get("/v1/audit", params={"limit": 1000}).json()
    imports = [r for r in audit if r.get("capability_id") == "findings.import"]
    assert imports and {r["principal"] for r in imports} == {"alice"}
    assert all(r["outcome"] == "ok" for r in imports)
    triaged = [r for r in audit if r.get("capability_id") == "findings.triage"]
    assert {r["principal"] for r in triaged} == {"alice", "agent"}
    assert {r["outcome"] for r in triaged if r["principal"] == "alice"} == {"ok"}
    assert {r["outcome"] for r in triaged if r["principal"] == "agent"} != {"ok"}
    assert any(
        r.get("capability_id") == "findings.list" and r["principal"] == "agent" for r in audit
    )


def test_a_triage_needing_approval_answers_202_with_its_approval(findings_server: Server) -> None:
    _import(findings_server, "alice", "nuclei-v2.1-gen-a.jsonl")
    with findings_server.client("bob") as bob:
        first = bob.get("/v1/findings/webapp").json()["findings"][0]["id"]
        pending = bob.post(f"/v1/findings/webapp/{first}/triage", json={"state": "fixed"})
    assert pending.status_code == 202, pending.text
    assert pending.json()["approval_id"]


def test_import_and_export_are_refused_to_whom_the_policy_denies(findings_server: Server) -> None:
    refused = _import(findings_server, "agent", "nuclei-v3.3-recent-keys.jsonl")
    assert refused.status_code == 403  # type: ignore[attr-defined]
    body = refused.json()  # type: ignore[attr-defined]
    assert body["code"] == "policy.denied"
    assert body["details"]["rule_id"] == "nobody-else-imports"
    assert body["result"]["audit_id"]  # the refusal is in the ledger too
    with findings_server.client("agent") as agent:
        assert agent.get("/v1/findings/webapp/export").status_code == 403


def test_unknown_findings_and_projects_are_problems(findings_server: Server) -> None:
    with findings_server.client("alice") as alice:
        missing = alice.get("/v1/findings/webapp/no-such-finding")
        assert missing.status_code == 404
        assert missing.json()["code"] == "findings.not_found"
        nothing = alice.get("/v1/findings/nowhere/export")
        assert nothing.status_code == 404
        bad = alice.get("/v1/findings/webapp", params={"severity": "catastrophic"})
        assert bad.status_code == 422


def test_knowledge_search_without_an_index_is_a_governed_problem(findings_server: Server) -> None:
    with findings_server.client("agent") as agent:
        answer = agent.get("/v1/knowledge/search", params={"q": "refund order"})
        empty = agent.get("/v1/knowledge/search", params={"q": ""})
        audit_count = len(json.loads(agent.get("/v1/capabilities").text))
    assert empty.status_code == 422
    assert audit_count > 0
    # no `aifr ingest` ran: the capability itself answers, as over MCP and the CLI
    assert answer.headers["content-type"] == "application/problem+json", answer.text
    assert answer.json()["code"].startswith(("ingest.", "config."))
    assert answer.json()["result"]["capability_id"] == "knowledge.search"


def test_an_http_import_leaves_no_upload_and_an_upload_id_names_no_path(
    findings_server: Server,
) -> None:
    done = _import(findings_server, "alice", "nuclei-v2.1-gen-a.jsonl")
    assert done.status_code == 201, done.text  # type: ignore[attr-defined]
    assert done.json()["file"].startswith("upload:")  # type: ignore[attr-defined]
    uploads = findings_server.log.parent / ".aifr" / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []
    with findings_server.client("alice") as alice:
        for forged in ("../../aifr.toml", "0" * 32):
            sent = alice.post(
                "/v1/capabilities/findings.import/invoke",
                json={"inputs": {"project": "webapp", "upload": forged}},
            )
            assert sent.status_code in (400, 404, 422), sent.text
            assert "upload" in sent.text
