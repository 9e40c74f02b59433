"""The gateway in front of real third-party MCP servers, through ``aifr mcp`` and the SDK client.

Three servers nobody here wrote: ``mcp-server-git`` (PyPI, in ``.[dev]``) and
``@modelcontextprotocol/server-everything`` / ``server-filesystem`` (npm, installed into
``.tools/`` by ``make mcp-servers``; ``make test`` does it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp_harness import build_target, run_aifr, start

from aifr.app import build_audit_ledger
from aifr.config import load_settings

REPO = Path(__file__).resolve().parents[3]
NODE_BIN = REPO / ".tools" / "node_modules" / ".bin"
EVERYTHING = NODE_BIN / "mcp-server-everything"
FILESYSTEM = NODE_BIN / "mcp-server-filesystem"
GIT = Path(sys.executable).parent / "mcp-server-git"

POLICY = """\
version: 1
roles:
  approver:
    principals: [alice]
rules:
  - id: no-env
    when: {capability: "every.get-env"}
    decision: DENY
    reason: the environment holds secrets
  - id: fs-writes-need-a-human
    when: {capability: "fs.write_file"}
    decision: REQUIRE_APPROVAL
    reason: writing files through the gateway needs a human
    approvers: [approver]
  - id: allow-reads
    when: {operation: READ}
    decision: ALLOW
  - id: saga-moves
    when: {capability: "fs.move_file"}
    decision: ALLOW
  - id: saga-stages
    when: {capability: "git.git_add"}
    decision: ALLOW
  - id: saga-unstages
    when: {capability: "git.git_reset"}
    decision: ALLOW
approvals:
  - risk: HIGH
    roles: [approver]
"""


def _servers_installed() -> None:
    missing = [str(p) for p in (EVERYTHING, FILESYSTEM, GIT) if not p.exists()]
    if missing:
        pytest.fail(
            f"third-party MCP servers missing ({', '.join(missing)}): run `make mcp-servers` "
            "and `make install-dev` (make test does both)"
        )


def _toml_list(items: list[str]) -> str:
    return json.dumps(items)


def _project(aifr_bin: str, root: Path, env: dict[str, str]) -> Path:
    _servers_installed()
    project = root / "gw"
    assert run_aifr(aifr_bin, "init", str(project), cwd=root, env=env).returncode == 0
    (project / "policies" / "default.yaml").write_text(POLICY)
    repo = root / "repo"
    repo.mkdir()
    for argv in (
        ["git", "init", "-q", "-b", "main"],
        [
            "git",
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=a",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "first",
        ],
    ):
        subprocess.run(argv, cwd=repo, check=True, env=env)
    files = root / "files"
    files.mkdir()
    (files / "hello.txt").write_text("hello from the filesystem server\n")
    config = project / "aifr.toml"
    config.write_text(
        config.read_text()
        + f"""
[mcp]
principal = "agent"

[[mcp.upstreams]]
name = "git"
command = {_toml_list([str(GIT), "--repository", str(repo)])}
[[mcp.upstreams.risk]]
tools = "git_status"
operation = "READ"
[[mcp.upstreams.risk]]
tools = "git_log"
operation = "READ"
[[mcp.upstreams.risk]]
tools = "git_add"
operation = "WRITE"
scope = "local"
compensation = "git.git_reset"
compensation_arguments = {{ repo_path = "{{{{ inputs.repo_path }}}}" }}
[[mcp.upstreams.risk]]
tools = "git_reset"
operation = "WRITE"
scope = "local"

[[mcp.upstreams]]
name = "every"
command = {_toml_list([str(EVERYTHING)])}
expose = ["echo", "get-env", "get-sum"]
[[mcp.upstreams.risk]]
tools = "echo"
operation = "READ"

[[mcp.upstreams]]
name = "fs"
command = {_toml_list([str(FILESYSTEM), str(files)])}
expose = ["read_text_file", "write_file", "list_directory", "move_file"]
[[mcp.upstreams.risk]]
tools = "read_*"
operation = "READ"
[[mcp.upstreams.risk]]
tools = "list_*"
operation = "READ"
[[mcp.upstreams.risk]]
tools = "write_file"
operation = "WRITE"
risk = "HIGH"
[[mcp.upstreams.risk]]
tools = "move_file"
operation = "WRITE"
scope = "local"
compensation = "fs.move_file"
compensation_arguments = {{ source = "{{{{ inputs.destination }}}}", destination = "{{{{ inputs.source }}}}" }}
"""
    )
    return project


def _params(aifr_bin: str, project: Path, env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(
        command=aifr_bin, args=["mcp", "-p", str(project)], env=env, cwd=str(project)
    )


def _error(result: types.CallToolResult) -> dict[str, Any]:
    assert result.is_error, result
    assert result.meta is not None
    error: dict[str, Any] = result.meta["aifr/error"]["error"]
    return error


def _git_server_pids(repo: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"mcp-server-git" in a for a in argv) and str(repo).encode() in argv:
            pids.append(int(entry.name))
    return pids


def test_gateway_lists_calls_denies_and_holds_upstream_tools_for_approval(
    aifr_bin: str, clean_env: dict[str, str], tmp_path: Path
) -> None:
    project = _project(aifr_bin, tmp_path, clean_env)

    async def main() -> tuple[list[types.Tool], list[types.CallToolResult]]:
        with anyio.fail_after(120):
            async with Client(_params(aifr_bin, project, clean_env), mode="legacy") as client:
                tools = (await client.list_tools()).tools
                calls = [
                    await client.call_tool("every.echo", {"message": "through aifr"}),
                    await client.call_tool("git.git_status", {"repo_path": str(tmp_path / "repo")}),
                    await client.call_tool(
                        "fs.read_text_file", {"path": str(tmp_path / "files" / "hello.txt")}
                    ),
                    await client.call_tool("every.get-env", {}),
                    await client.call_tool(
                        "fs.write_file",
                        {"path": str(tmp_path / "files" / "new.txt"), "content": "x"},
                    ),
                    await client.call_tool("every.echo", {}),
                ]
                return tools, calls

    tools, (echoed, status, read, denied, pending, invalid) = anyio.run(main)
    listed = {tool.name: tool for tool in tools}
    assert {"every.echo", "git.git_status", "fs.read_text_file", "fs.write_file"} <= set(listed)
    assert "every.get-env" not in listed  # always denied to this caller: left out
    assert "git.git_commit" not in listed  # undeclared, so HIGH: the default denies it
    assert "every.get-tiny-image" not in listed  # not exposed
    assert listed["every.echo"].input_schema["required"] == ["message"]
    assert listed["git.git_status"].annotations is not None
    assert listed["git.git_status"].annotations.read_only_hint is True
    assert "risk HIGH" in (listed["fs.write_file"].description or "")

    assert not echoed.is_error
    assert echoed.structured_content == {
        "content": [{"type": "text", "text": "Echo: through aifr"}]
    }
    assert not status.is_error and "On branch main" in json.dumps(status.structured_content)
    assert not read.is_error and "hello from the filesystem server" in json.dumps(
        read.structured_content
    )
    assert _error(denied)["code"] == "policy.denied"
    assert "the environment holds secrets" in _error(denied)["message"]
    assert _error(pending)["code"] == "approval.required"
    assert not (tmp_path / "files" / "new.txt").exists()
    assert _error(invalid)["code"] == "input.invalid"

    ledger = build_audit_ledger(load_settings(project))
    try:
        events = [r.event for r in ledger.records()]
        records = [e for e in events if e.capability_id == "every.echo" and e.kind == "invocation"]
    finally:
        ledger.close()
    upstream = records[0].details["upstream"]
    assert upstream["name"] == "every"
    assert upstream["server"] == "mcp-servers/everything"
    assert upstream["server_version"]


def test_a_killed_upstream_fails_its_call_clearly_and_is_restarted(
    aifr_bin: str, clean_env: dict[str, str], tmp_path: Path
) -> None:
    project = _project(aifr_bin, tmp_path, clean_env)
    repo = tmp_path / "repo"
    arguments = {"repo_path": str(repo)}

    async def main() -> tuple[types.CallToolResult, types.CallToolResult, int]:
        with anyio.fail_after(120):
            async with Client(_params(aifr_bin, project, clean_env), mode="legacy") as client:
                before = await client.call_tool("git.git_status", arguments)
                first = _git_server_pids(repo)
                assert len(first) == 1, first
                os.kill(first[0], signal.SIGKILL)
                failed = await client.call_tool("git.git_status", arguments)
                while True:  # the backoff is short; bounded by fail_after
                    again = await client.call_tool("git.git_status", arguments)
                    if not again.is_error:
                        break
                    assert _error(again)["code"] == "transport.upstream_unavailable"
                    await anyio.sleep(0.1)
                second = _git_server_pids(repo)
                assert before.is_error is False
                return failed, again, len(set(second) - set(first))

    failed, again, new = anyio.run(main)
    error = _error(failed)
    assert error["code"] == "transport.upstream_unavailable"
    assert "'git'" in error["message"]
    assert "On branch main" in json.dumps(again.structured_content)
    assert new == 1


def test_upstreams_list_and_test_show_tools_risk_and_whether_they_answer(
    aifr_bin: str, clean_env: dict[str, str], tmp_path: Path
) -> None:
    project = _project(aifr_bin, tmp_path, clean_env)
    env = {**clean_env, "COLUMNS": "40"}
    listed = run_aifr(
        aifr_bin, "upstreams", "list", "--json", "-p", str(project), cwd=project, env=env
    )
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {"git", "every", "fs"}
    assert all(row["answers"] for row in rows.values())
    git_tools = {t["tool"]: t for t in rows["git"]["tools"]}
    assert git_tools["git_status"] == {
        "tool": "git_status",
        "capability": "git.git_status",
        "operation": "READ",
        "risk": "LOW",
        "declared": True,
        "exposed": True,
        "changed": False,
    }
    assert git_tools["git_commit"]["risk"] == "HIGH" and not git_tools["git_commit"]["declared"]
    assert {t["tool"]: t["exposed"] for t in rows["every"]["tools"]}["get-tiny-image"] is False

    tested = run_aifr(aifr_bin, "upstreams", "test", "fs", "-p", str(project), cwd=project, env=env)
    assert tested.returncode == 0, tested.stderr
    assert "fs.write_file" in tested.stdout.replace("\n", "")

    unknown = run_aifr(
        aifr_bin, "upstreams", "test", "nope", "-p", str(project), cwd=project, env=env
    )
    assert unknown.returncode != 0
    assert "no upstream named 'nope'" in unknown.stderr + unknown.stdout


SAGA = """\
name: publish
description: Move a draft into place, stage it, then check a file that is not there.
inputs:
  files: {type: string}
  repo: {type: string}
steps:
  - id: move
    capability: fs.move_file
    inputs: {source: "{{ inputs.files }}/draft.txt", destination: "{{ inputs.files }}/final.txt"}
  - id: stage
    capability: git.git_add
    inputs: {repo_path: "{{ inputs.repo }}", files: ["notes.txt"]}
  - id: check
    capability: fs.read_text_file
    inputs: {path: "{{ inputs.files }}/missing.txt"}
"""


def test_a_workflow_across_two_upstreams_compensates_on_both_when_its_last_step_fails(
    aifr_bin: str, clean_env: dict[str, str], tmp_path: Path
) -> None:
    project = _project(aifr_bin, tmp_path, clean_env)
    (project / "workflows" / "publish.yaml").write_text(SAGA)
    files, repo = tmp_path / "files", tmp_path / "repo"
    (files / "draft.txt").write_text("draft\n")
    (repo / "notes.txt").write_text("notes\n")

    async def main() -> types.CallToolResult:
        with anyio.fail_after(120):
            async with Client(_params(aifr_bin, project, clean_env), mode="legacy") as client:
                return await client.call_tool(
                    "workflow.publish", {"files": str(files), "repo": str(repo)}
                )

    result = anyio.run(main)
    error = _error(result)
    assert error["code"] == "workflow.step_failed", result
    assert "ended compensated at step check" in error["message"]
    assert (files / "draft.txt").read_text() == "draft\n"  # moved back by fs.move_file
    assert not (files / "final.txt").exists()
    staged = subprocess.run(
        ["git", "diff", "--cached", "--name-only"], cwd=repo, capture_output=True, text=True
    )
    assert staged.stdout == ""  # unstaged by git.git_reset
    ledger = build_audit_ledger(load_settings(project))
    try:
        ran = [
            (r.event.capability_id, r.event.outcome)
            for r in ledger.records()
            if r.event.kind == "invocation"
        ]
    finally:
        ledger.close()
    assert ran == [
        ("fs.move_file", "ok"),
        ("git.git_add", "ok"),
        ("fs.read_text_file", "transport.upstream_tool_failed"),
        ("git.git_reset", "ok"),
        ("fs.move_file", "ok"),
    ]


def _call(
    aifr_bin: str, project: Path, env: dict[str, str], tool: str, arguments: dict[str, Any]
) -> types.CallToolResult:
    async def main() -> types.CallToolResult:
        with anyio.fail_after(60):
            async with Client(_params(aifr_bin, project, env), mode="legacy") as client:
                return await client.call_tool(tool, arguments)

    return anyio.run(main)


def test_reviewed_upstreams_start_on_first_call_and_a_changed_tool_is_refused_until_reviewed(
    aifr_bin: str, clean_env: dict[str, str], tmp_path: Path
) -> None:
    project = _project(aifr_bin, tmp_path, clean_env)
    repo = tmp_path / "repo"
    arguments = {"repo_path": str(repo)}
    reviewed = run_aifr(
        aifr_bin, "upstreams", "list", "--json", "-p", str(project), cwd=project, env=clean_env
    )
    assert reviewed.returncode == 0, reviewed.stderr
    catalog = project / ".aifr" / "upstreams" / "git.json"
    assert catalog.exists()

    async def lazily() -> tuple[set[str], list[int], types.CallToolResult, list[int]]:
        with anyio.fail_after(60):
            async with Client(_params(aifr_bin, project, clean_env), mode="legacy") as client:
                listed = {tool.name for tool in (await client.list_tools()).tools}
                before = _git_server_pids(repo)
                called = await client.call_tool("git.git_status", arguments)
                return listed, before, called, _git_server_pids(repo)

    listed, before, called, after = anyio.run(lazily)
    assert "git.git_status" in listed
    assert before == []  # served from the reviewed list: not started yet
    assert not called.is_error
    assert len(after) == 1

    body = json.loads(catalog.read_text())
    for tool in body["tools"]:
        if tool["name"] == "git_status":
            tool["inputSchema"]["properties"]["verbose"] = {"type": "boolean"}
    catalog.write_text(json.dumps(body))
    drifted = _call(aifr_bin, project, clean_env, "git.git_status", arguments)
    assert _error(drifted)["code"] == "transport.upstream_drift"
    assert "aifr upstreams list" in _error(drifted)["message"]
    assert not _call(aifr_bin, project, clean_env, "git.git_log", arguments).is_error

    again = run_aifr(
        aifr_bin, "upstreams", "list", "--json", "-p", str(project), cwd=project, env=clean_env
    )
    rows = {row["name"]: row for row in json.loads(again.stdout)}
    changed = {t["tool"] for t in rows["git"]["tools"] if t["changed"]}
    assert changed == {"git_status"}
    assert not _call(aifr_bin, project, clean_env, "git.git_status", arguments).is_error


def test_an_http_upstream_is_reached_with_an_auth_header_from_a_secret(
    aifr_bin: str, clean_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "up").mkdir()
    upstream = start(build_target("http", aifr_bin, tmp_path / "up", clean_env, tmp_path))
    try:
        root = tmp_path / "down"
        root.mkdir()
        assert run_aifr(aifr_bin, "init", str(root / "gw"), cwd=root, env=clean_env).returncode == 0
        project = root / "gw"
        config = project / "aifr.toml"
        config.write_text(
            config.read_text()
            + f"""
[mcp]
principal = "agent"

[[mcp.upstreams]]
name = "shop"
url = "{upstream.url}"
headers = {{ Authorization = "secret://SHOP_AUTH" }}
[[mcp.upstreams.risk]]
tools = "shop.greet"
operation = "READ"
"""
        )
        good = {**clean_env, "SHOP_AUTH": f"Bearer {upstream.token}"}
        greeted = _call(aifr_bin, project, good, "shop.shop_greet", {"name": "Ada"})
        bad = {**clean_env, "SHOP_AUTH": "Bearer not-a-token"}
        refused = run_aifr(
            aifr_bin,
            "upstreams",
            "test",
            "shop",
            "--json",
            "-p",
            str(project),
            cwd=project,
            env=bad,
        )
    finally:
        for server in upstream.servers:
            server.stop()
    assert not greeted.is_error, greeted
    assert greeted.structured_content == {"greeting": "Hello, Ada!"}
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["answers"] is False
