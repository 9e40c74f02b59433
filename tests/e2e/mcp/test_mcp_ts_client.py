"""The official TypeScript SDK client (``@modelcontextprotocol/client``) drives ``aifr mcp``.

It is the client web and desktop hosts build on, and stricter than the Python one in
places: it checks ``structuredContent`` against each tool's ``outputSchema`` with ajv
(formats included), validates elicitation requests and answers, and dispatches progress
its own way. ``ts_client/drive.mjs`` runs one session per transport (stdio, streamable
HTTP with a bearer token) and protocol era (2025-11-25, and 2026-07-28 negotiated with
``server/discover``) and prints one JSON summary; this test asserts on it.
``make test`` installs the client (with the MCP Inspector) into ``.tools/``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mcp_harness import POLICY, McpTarget, build_target, run_aifr, start

REPO = Path(__file__).resolve().parents[3]
SDK = REPO / ".tools" / "node_modules" / "@modelcontextprotocol" / "client"
DRIVER = Path(__file__).with_name("ts_client") / "drive.mjs"

PLACED = '''
"""A capability whose output holds a time without a UTC offset."""

import datetime as dt

from pydantic import BaseModel

from aifr import capability


class Placed(BaseModel):
    """When an order was placed, in local time."""

    order_id: int
    at: dt.datetime
    clock: dt.time


@capability("shop.placed", operation="READ", risk="LOW")
def placed(order_id: int) -> Placed:
    """When an order was placed.

    Args:
        order_id: The order.
    """
    return Placed(order_id=order_id, at=dt.datetime(2024, 5, 1, 12, 30), clock=dt.time(12, 30))
'''

EXTRA_RULES = """rules:
  - id: no-exec-over-mcp
    when:
      capability: "sys.exec"
    decision: DENY
    reason: agents do not run commands
  - id: trash-is-undoable
    when:
      capability: "io.fs.delete"
    decision: ALLOW
    reason: deletes go to the trash
"""

SESSIONS = {
    "stdio": ("2025-11-25", 100),
    "http": ("2025-11-25", 200),
    "stdio_modern": ("2026-07-28", 300),
    "http_modern": ("2026-07-28", 400),
}

STDLIB_OK = [
    "write",
    "read",
    "list",
    "stat",
    "stat_missing",
    "move",
    "restore",
    "delete",
    "csv",
    "json",
    "json_scalar",
    "query",
    "transform",
    "env",
]


def _prepare(target: McpTarget) -> None:
    project = target.project
    (project / "ts_caps.py").write_text(PLACED)
    policy = POLICY.replace("rules:\n", EXTRA_RULES, 1)
    (project / "policies" / "default.yaml").write_text(policy)
    config = project / "aifr.toml"
    config.write_text(config.read_text().replace('["mcp_caps"]', '["mcp_caps", "ts_caps"]', 1))


def _drive(target: McpTarget, env: dict[str, str]) -> dict[str, Any]:
    if not (SDK / "package.json").exists() or shutil.which("node") is None:
        pytest.fail(
            "the MCP TypeScript SDK client is not installed: run `make inspector` (make test does)"
        )
    config = {
        "sdk": str(SDK),
        "aifr": target.aifr_bin,
        "project": str(target.project),
        "http": {"url": target.url, "token": target.token},
    }
    done = subprocess.run(
        ["node", str(DRIVER), json.dumps(config)],
        cwd=target.project,
        env=env,
        capture_output=True,
        text=True,
        timeout=270,  # a hang guard: 23 s on a quiet host, several times that on a loaded one
    )
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def _ok(call: dict[str, Any]) -> dict[str, Any]:
    assert "threw" not in call, call
    assert call["isError"] is False, call
    structured: dict[str, Any] = call["structured"]
    assert isinstance(structured, dict), call
    return structured


def _error(call: dict[str, Any], code: str) -> str:
    assert "threw" not in call, call
    assert call["isError"] is True, call
    assert call["code"] == code, call
    assert call["structured"] is None, call
    assert call["payload"]["ok"] is False
    text: str = call["text"]
    assert text.startswith(f"{code}: "), text
    return text


def _check_tools(tools: list[dict[str, Any]]) -> None:
    listed = {tool["name"]: tool for tool in tools}
    stdlib = {
        "data.csv.parse",
        "data.json.parse",
        "data.query",
        "data.transform",
        "io.fs.delete",
        "io.fs.list_dir",
        "io.fs.move",
        "io.fs.read_file",
        "io.fs.restore",
        "io.fs.stat",
        "io.fs.write_file",
        "io.net.http_get",
        "io.net.http_request",
        "knowledge.search",
        "sys.env.read",
        "sys.exec",
    }
    findings = {
        "findings.import",
        "findings.list",
        "findings.show",
        "findings.triage",
        "resources.add",
        "resources.list",
        "resources.remove",
    }
    scanners = {"scan.nuclei", "scan.feroxbuster", "scan.katana"}
    shop = {"shop.count", "shop.greet", "shop.orders.cancel", "shop.placed", "shop.refund"}
    workflows = {"workflow.goodwill", "workflow.welcome"}
    assert set(listed) == (
        stdlib | findings | scanners | shop | workflows | {"aifr.approvals.status"}
    )
    assert all(listed[name]["hasOutputSchema"] for name in stdlib | shop)
    assert listed["io.fs.read_file"]["annotations"] == {
        "title": "Read File",
        "readOnlyHint": True,
        "destructiveHint": False,
        "idempotentHint": True,
        "openWorldHint": False,
    }
    assert listed["io.fs.delete"]["annotations"]["destructiveHint"] is True
    assert listed["io.net.http_request"]["annotations"]["openWorldHint"] is True


def _check_stdlib(calls: dict[str, Any], kind: str) -> None:
    folder = f"notes-{kind.split('_')[0]}"
    for name in STDLIB_OK:
        _ok(calls[name])
    assert calls["read"]["structured"]["content"] == "hello\n"
    assert [e["name"] for e in calls["list"]["structured"]["entries"]] == ["a.txt"]
    assert calls["stat"]["structured"]["exists"] is True
    assert calls["stat_missing"]["structured"]["exists"] is False
    assert (
        calls["restore"]["structured"]["restored"] == calls["move"]["structured"]["undo"]["token"]
    )
    assert calls["delete"]["structured"]["path"] == f"{folder}/a.txt"
    assert calls["csv"]["structured"]["rows"] == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]
    assert calls["json"]["structured"] == {"value": {"x": [1, 2, {"y": None}]}}
    assert calls["json_scalar"]["structured"] == {"value": 7}
    assert calls["query"]["structured"] == {"result": [12]}
    assert calls["transform"]["structured"] == {"result": {"out": 1}}
    assert calls["env"]["structured"] == {
        "variables": {"TS_E2E_PLAIN": "visible", "TS_E2E_API_TOKEN": "****"},
        "masked": ["TS_E2E_API_TOKEN"],
    }
    assert "No such file" in _error(calls["read_missing"], "execution.failed")
    assert "path_outside_root" in _error(calls["read_outside"], "execution.refused")
    assert "'no-exec-over-mcp'" in _error(calls["exec"], "policy.denied")
    assert calls["exec"]["payload"]["rule_id"] == "no-exec-over-mcp"
    assert "scheme_not_allowed" in _error(calls["http_get"], "execution.refused")
    assert "rule default" in _error(calls["http_request"], "policy.denied")


def _check_governed(calls: dict[str, Any]) -> None:
    assert _ok(calls["allowed"]) == {"greeting": "Hello, Ada! Hello, Ada!"}
    assert calls["allowed"]["meta"]["aifr/decision"] == "ALLOW"
    assert calls["allowed"]["meta"]["aifr/rule_id"] == "allow-reads"
    assert _ok(calls["wrapped"]) == {"result": 4}
    # A naive datetime and time pass the client's ajv format check (date-time, time).
    assert _ok(calls["stamped"]) == {
        "order_id": 5,
        "at": "2024-05-01T12:30:00",
        "clock": "12:30:00",
    }
    denied = _error(calls["denied"], "policy.denied")
    assert "'no-cancel-by-agents'" in denied
    assert calls["denied"]["payload"]["rule_id"] == "no-cancel-by-agents"
    fields = {
        "bad_length": ("name", "length"),
        "bad_range": ("times", "max"),
        "missing": ("order_id", "required"),
    }
    for name, (field, code) in fields.items():
        text = _error(calls[name], "input.invalid")
        assert text.startswith(f"input.invalid: invalid arguments: {field}: "), text
        errors = calls[name]["payload"]["error"]["details"]["errors"]
        assert [(e["path"], e["code"]) for e in errors] == [(field, code)]
    assert "'shop.nothing'" in _error(calls["unknown"], "capability.not_found")


def _check_approvals(out: dict[str, Any], order: int) -> None:
    assert _ok(out["approve"]) == {"order_id": order, "refunded": 5}
    rejected = _error(out["reject"], "approval.rejected")
    assert rejected.startswith("approval.rejected: alice rejected the request to run shop.refund")
    assert "nothing was recorded" in _error(out["decline"], "approval.required")
    assert out["decline"]["payload"]["status"] == "pending_approval"
    assert [a["answered"]["action"] for a in out["asked"]] == ["accept", "accept", "decline"]
    for asked in out["asked"]:
        assert asked["mode"] == "form"
        assert asked["schema"]["required"] == ["decision"]
        assert asked["schema"]["properties"]["decision"]["enum"] == ["approve", "reject"]
        assert "'refunds-need-a-human'" in asked["message"]
        assert "approval of 'alice'" in asked["message"]

    # Without elicitation: pending, approved on the command line, then run once.
    pending = out["pending"]["payload"]
    _error(out["pending"], "approval.required")
    assert pending["status"] == "pending_approval"
    assert pending["approver_roles"] == ["approver"]
    assert pending["rule_id"] == "refunds-need-a-human"
    assert _ok(out["status_pending"])["status"] == "pending"
    assert out["approved_by_cli"] is True
    assert _ok(out["after_approval"]) == {"order_id": order + 4, "refunded": 7}
    consumed = _ok(out["status_consumed"])
    assert consumed["approval_id"] == pending["approval_id"]
    assert consumed["status"] == "consumed"
    assert consumed["decided_by"] == "alice"


def _check_progress(run: dict[str, Any], last: str) -> None:
    # Wire order: 0/3 at the start, one per step, 3/3 at the end, then the response,
    # all on the token of the call's request id.
    *notes, response = run["wire"]
    request_id = response["response"]
    assert [(n["progress"]["progress"], n["progress"]["total"]) for n in notes] == [
        (0, 3),
        (1, 3),
        (2, 3),
        (3, 3),
    ]
    assert {n["progress"]["progressToken"] for n in notes} == {request_id}
    assert notes[-1]["progress"]["message"].endswith(last)
    # The client delivers what it dispatches before the response; any later one it
    # reports as an unknown token (typescript-sdk #2580), never anything else.
    delivered = run["progress"]
    assert delivered == [
        {k: n["progress"].get(k) for k in ("progress", "total", "message")}
        for n in notes[: len(delivered)]
    ]
    late = len(notes) - len(delivered)
    assert len(run["errors"]) == late, run["errors"]
    assert all("progress notification for an unknown token" in e for e in run["errors"])


def _check_workflows(out: dict[str, Any]) -> None:
    welcome = _ok(out["welcome"]["result"])
    assert welcome["state"] == "completed"
    assert [s["output"] for s in welcome["steps"]] == [
        {"greeting": "Hello, Ada! Hello, Ada!"},
        23,
    ]
    _check_progress(out["welcome"], "completed")
    text = _error(out["goodwill"]["result"], "approval.required")
    assert "waits for a human approval of step refund" in text
    assert out["goodwill"]["result"]["payload"]["run"]["state"] == "waiting_approval"
    _check_progress(out["goodwill"], "waiting_approval")


def _check_resources(resources: dict[str, Any], out: dict[str, Any]) -> None:
    assert resources["list"] == ["aifr://capabilities/manifest", "aifr://audit/recent"]
    assert sorted(resources["templates"]) == [
        "aifr://approvals/{approval_id}",
        "aifr://findings/{project}",
        "aifr://runs/{run_id}",
    ]
    manifest = resources["manifest"]
    assert manifest["mimeType"] == "application/json"
    assert "shop.refund" in {c["id"] for c in manifest["json"]["capabilities"]}
    audit = resources["audit"]["json"]
    assert audit["principal"] == "agent"
    assert {r["principal"] for r in audit["records"]} == {"agent"}
    run = resources["run"]["json"]
    assert run["id"] == out["welcome"]["result"]["structured"]["id"]
    assert run["state"] == "completed"
    approval = resources["approval"]["json"]
    assert approval["approval_id"] == out["decline"]["payload"]["approval_id"]
    assert approval["status"] == "pending"
    assert resources["unknown_run"]["threw"] == "ProtocolError"
    assert resources["unknown_run"]["code"] == -32602
    assert resources["unknown_run"]["message"].startswith("workflow.run_not_found: ")


def test_typescript_sdk_client_lists_calls_approves_and_reads_over_stdio_and_http(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str], short_dir: Path
) -> None:
    env = {**clean_env, "TS_E2E_PLAIN": "visible", "TS_E2E_API_TOKEN": "s3cret-value"}
    target = build_target("http", aifr_bin, tmp_path, env, short_dir)
    _prepare(target)
    start(target)
    try:
        summary = _drive(target, env)
    finally:
        for server in target.servers:
            server.stop()
    assert "Traceback" not in target.servers[0].stderr, target.servers[0].stderr

    assert set(summary) == set(SESSIONS)
    for kind, (protocol, order) in SESSIONS.items():
        out = summary[kind]
        assert "threw" not in out, (kind, out)
        assert (out["server"], out["protocol"]) == ("aifr", protocol), kind
        _check_tools(out["tools"])
        _check_stdlib(out["stdlib"], kind)
        _check_governed(out["governed"])
        _check_approvals(out, order)
        _check_workflows(out)
        _check_resources(out["resources"], out)

    # Each elicited answer and each command-line approval is on record as alice's.
    listed = run_aifr(
        aifr_bin, "approvals", "list", "--json", "-p", str(target.project), cwd=tmp_path, env=env
    )
    assert listed.returncode == 0, listed.stderr
    approvals = json.loads(listed.stdout)
    by_order: dict[int, dict[str, Any]] = {}
    for approval in approvals:
        if approval["capability_id"] == "shop.refund" and "order_id" in approval["inputs"]:
            by_order[approval["inputs"]["order_id"]] = approval
    for _protocol, order in SESSIONS.values():
        assert (by_order[order]["status"], by_order[order]["decided_by"]) == ("consumed", "alice")
        assert (by_order[order + 1]["status"], by_order[order + 1]["decided_by"]) == (
            "rejected",
            "alice",
        )
        assert by_order[order + 2]["status"] == "pending"
        assert (by_order[order + 4]["status"], by_order[order + 4]["decided_by"]) == (
            "consumed",
            "alice",
        )
    verified = run_aifr(
        aifr_bin, "audit", "verify", "-p", str(target.project), cwd=tmp_path, env=env
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
