"""The MCP Inspector CLI (a client nobody here wrote) lists and calls aifr's tools.

``make test`` installs ``@modelcontextprotocol/inspector`` 2.x into ``.tools/`` once.
It is the TypeScript SDK's client: over stdio it launches ``aifr mcp`` itself (arguments
after ``--`` go to the server command untouched; the Inspector has its own
``--transport`` option), over streamable HTTP it reaches a running ``aifr mcp`` with
its own session, header and protocol-version handling.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from mcp_harness import build_target, make_project, run_aifr, start

REPO = Path(__file__).resolve().parents[3]
INSPECTOR = REPO / ".tools" / "node_modules" / ".bin" / "mcp-inspector"


def _run_inspector(
    env: dict[str, str], tmp_path: Path, *argv: str
) -> subprocess.CompletedProcess[str]:
    if not INSPECTOR.exists() or shutil.which("npx") is None:
        pytest.fail("the MCP Inspector is not installed: run `make inspector` (make test does)")
    return subprocess.run(
        ["npx", "--prefix", str(REPO / ".tools"), "mcp-inspector", "--cli", *argv],
        cwd=tmp_path,
        env={
            **env,
            "MCP_CATALOG_PATH": str(tmp_path / "inspector-catalog.json"),
            "npm_config_update_notifier": "false",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def _inspector(
    project: Path,
    aifr_bin: str,
    env: dict[str, str],
    tmp_path: Path,
    *method: str,
    exit_code: int = 0,
) -> dict:  # type: ignore[type-arg]
    result = _run_inspector(
        env,
        tmp_path,
        *method,
        "--",
        aifr_bin,
        "mcp",
        "--transport",
        "stdio",
        "-p",
        str(project),
    )
    # The Inspector prints the result on stdout and exits 5 when the tool returned isError.
    assert result.returncode == exit_code, result.stderr + result.stdout
    return json.loads(result.stdout)


def test_inspector_lists_and_calls_aifr_tools(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = make_project(aifr_bin, tmp_path, clean_env, operator=None)
    listed = _inspector(project, aifr_bin, clean_env, tmp_path, "--method", "tools/list")
    tools = {tool["name"]: tool for tool in listed["tools"]}
    assert {"shop.greet", "shop.refund", "aifr.approvals.status"} <= set(tools)
    assert tools["shop.greet"]["annotations"]["readOnlyHint"] is True

    called = _inspector(
        project,
        aifr_bin,
        clean_env,
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "shop.greet",
        "--tool-arg",
        "name=Ada",
        "times=2",
    )
    assert called["isError"] is False
    assert called["structuredContent"] == {"greeting": "Hello, Ada! Hello, Ada!"}

    denied = _inspector(
        project,
        aifr_bin,
        clean_env,
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "shop.orders.cancel",
        "--tool-arg",
        "order_id=1",
        exit_code=5,
    )
    assert denied["isError"] is True
    assert "structuredContent" not in denied
    assert denied["_meta"]["aifr/error"]["error"]["code"] == "policy.denied"
    assert "no-cancel-by-agents" in denied["content"][0]["text"]


def test_inspector_over_streamable_http_with_a_bearer_token(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str], short_dir: Path
) -> None:
    target = start(build_target("http", aifr_bin, tmp_path, clean_env, short_dir))
    assert target.url is not None and target.token is not None
    try:

        def over_http(token: str, *method: str) -> subprocess.CompletedProcess[str]:
            return _run_inspector(
                clean_env,
                tmp_path,
                "--transport",
                "http",
                "--server-url",
                str(target.url),
                "--header",
                f"Authorization: Bearer {token}",
                *method,
            )

        listed = over_http(target.token, "--method", "tools/list")
        assert listed.returncode == 0, listed.stderr + listed.stdout
        assert {"shop.greet", "aifr.approvals.status"} <= {
            tool["name"] for tool in json.loads(listed.stdout)["tools"]
        }

        called = over_http(
            target.token,
            "--method",
            "tools/call",
            "--tool-name",
            "shop.greet",
            "--tool-arg",
            "name=Ada",
        )
        assert called.returncode == 0, called.stderr + called.stdout
        answer = json.loads(called.stdout)
        assert answer["structuredContent"] == {"greeting": "Hello, Ada!"}
        assert answer["_meta"]["aifr/decision"] == "ALLOW"

        denied = over_http(
            target.token,
            "--method",
            "tools/call",
            "--tool-name",
            "shop.orders.cancel",
            "--tool-arg",
            "order_id=7",
        )
        assert denied.returncode == 5, denied.stderr + denied.stdout
        assert json.loads(denied.stdout)["_meta"]["aifr/error"]["error"]["code"] == "policy.denied"

        forged = over_http("not-a-token", "--method", "tools/list")
        assert forged.returncode != 0
        assert "shop.greet" not in forged.stdout
    finally:
        for server in target.servers:
            server.stop()
    assert "Traceback" not in target.servers[0].stderr, target.servers[0].stderr

    # Both calls are on the audit chain as the token's principal; the forged token made none.
    exported = run_aifr(
        aifr_bin, "audit", "export", "-p", str(target.project), cwd=tmp_path, env=clean_env
    )
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    calls = [r for r in records if r["kind"] == "invocation"]
    assert {(r["capability_id"], r["decision"], r["principal"]) for r in calls} == {
        ("shop.greet", "ALLOW", "agent"),
        ("shop.orders.cancel", "DENY", "agent"),
    }
    verified = run_aifr(
        aifr_bin, "audit", "verify", "-p", str(target.project), cwd=tmp_path, env=clean_env
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
