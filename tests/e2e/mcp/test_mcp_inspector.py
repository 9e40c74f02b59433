"""The MCP Inspector CLI (a client nobody here wrote) lists and calls aifr's tools.

``make test`` installs ``@modelcontextprotocol/inspector`` 2.x into ``.tools/`` once.
Arguments after ``--`` go to the server command untouched (the Inspector has its own
``--transport`` option).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from mcp_harness import make_project

REPO = Path(__file__).resolve().parents[3]
INSPECTOR = REPO / ".tools" / "node_modules" / ".bin" / "mcp-inspector"


def _inspector(
    project: Path,
    aifr_bin: str,
    env: dict[str, str],
    tmp_path: Path,
    *method: str,
    exit_code: int = 0,
) -> dict:  # type: ignore[type-arg]
    if not INSPECTOR.exists() or shutil.which("npx") is None:
        pytest.fail("the MCP Inspector is not installed: run `make inspector` (make test does)")
    result = subprocess.run(
        [
            "npx",
            "--prefix",
            str(REPO / ".tools"),
            "mcp-inspector",
            "--cli",
            *method,
            "--",
            aifr_bin,
            "mcp",
            "--transport",
            "stdio",
            "-p",
            str(project),
        ],
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
