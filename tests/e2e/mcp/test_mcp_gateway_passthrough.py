"""What passes through the gateway besides tool calls, and upstream tools outside ``aifr mcp``.

Through ``aifr mcp`` with the SDK client: an upstream started by the first ``tools/list``
(not before), its progress notifications reaching the client during a governed call
(server-everything's ``trigger-long-running-operation``), its resources and prompts
listed and read read-only as governed calls (audited; one refused by a rule), and an upstream's ``notifications/tools/list_changed``
passed on, with the tool it changed then refused as drift. Outside it: ``aifr call``
and ``aifr run`` use upstream tools, the workflow compensating on the upstream.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp_harness import run_aifr

from aifr.app import build_audit_ledger
from aifr.config import load_settings

REPO = Path(__file__).resolve().parents[3]
EVERYTHING = REPO / ".tools" / "node_modules" / ".bin" / "mcp-server-everything"
FILESYSTEM = REPO / ".tools" / "node_modules" / ".bin" / "mcp-server-filesystem"
CHANGING = REPO / "tests" / "fixtures" / "mcp_upstreams" / "changing_server.py"

POLICY = """\
version: 1
rules:
  - id: no-startup-notes
    when:
      capability: "every.resources.read"
      inputs:
        uri: {glob: "*/startup.md"}
    decision: DENY
    reason: the startup notes stay private
  - id: allow-reads
    when: {operation: READ}
    decision: ALLOW
  - id: saga-moves
    when: {capability: "fs.move_file"}
    decision: ALLOW
"""

SAGA = """\
name: tidy
inputs:
  files: {type: string}
steps:
  - id: move
    capability: fs.move_file
    inputs: {source: "{{ inputs.files }}/draft.txt", destination: "{{ inputs.files }}/final.txt"}
  - id: check
    capability: fs.read_text_file
    inputs: {path: "{{ inputs.files }}/missing.txt"}
"""


def _project(aifr_bin: str, root: Path, env: dict[str, str]) -> Path:
    missing = [str(p) for p in (EVERYTHING, FILESYSTEM) if not p.exists()]
    if missing:
        pytest.fail(f"npm MCP servers missing ({', '.join(missing)}): run `make mcp-servers`")
    project = root / "gw"
    assert run_aifr(aifr_bin, "init", str(project), cwd=root, env=env).returncode == 0
    (project / "policies" / "default.yaml").write_text(POLICY)
    (project / "workflows" / "tidy.yaml").write_text(SAGA)
    files = root / "files"
    files.mkdir()
    changing = [sys.executable, str(CHANGING), str(root)]  # root marks its process
    config = project / "aifr.toml"
    config.write_text(
        config.read_text()
        + f"""
[mcp]
principal = "agent"

[[mcp.upstreams]]
name = "every"
command = {json.dumps([str(EVERYTHING)])}
expose = ["echo", "trigger-long-running-operation"]
resources = true
prompts = true
[[mcp.upstreams.risk]]
tools = "*"
operation = "READ"

[[mcp.upstreams]]
name = "changing"
command = {json.dumps(changing)}
[[mcp.upstreams.risk]]
tools = "*"
operation = "READ"

[[mcp.upstreams]]
name = "fs"
command = {json.dumps([str(FILESYSTEM), str(files)])}
expose = ["read_text_file", "move_file"]
[[mcp.upstreams.risk]]
tools = "read_*"
operation = "READ"
[[mcp.upstreams.risk]]
tools = "move_file"
operation = "WRITE"
scope = "local"
compensation = "fs.move_file"
compensation_arguments = {{ source = "{{{{ inputs.destination }}}}", destination = "{{{{ inputs.source }}}}" }}
"""
    )
    return project


def _processes_naming(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in argv and any(b"changing_server.py" in a for a in argv):
            pids.append(int(entry.name))
    return pids


def _error(result: types.CallToolResult) -> dict[str, Any]:
    assert result.is_error, result
    assert result.meta is not None
    error: dict[str, Any] = result.meta["aifr/error"]["error"]
    return error


def test_progress_list_changed_resources_and_prompts_pass_through_and_upstreams_start_lazily(
    aifr_bin: str, clean_env: dict[str, str], tmp_path: Path
) -> None:
    project = _project(aifr_bin, tmp_path, clean_env)
    params = StdioServerParameters(
        command=aifr_bin, args=["mcp", "-p", str(project)], env=clean_env, cwd=str(project)
    )
    notes: list[object] = []
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_message(message: object) -> None:
        notes.append(message)

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def main() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        with anyio.fail_after(150):
            async with Client(params, mode="legacy", message_handler=on_message) as client:
                await anyio.sleep(1)  # served, and nothing has asked for upstream tools
                seen["before"] = _processes_naming(str(tmp_path))
                seen["tools"] = {t.name for t in (await client.list_tools()).tools}
                seen["after"] = _processes_naming(str(tmp_path))
                seen["long"] = await client.call_tool(
                    "every.trigger-long-running-operation",
                    {"duration": 1, "steps": 3},
                    progress_callback=on_progress,
                )
                resources = (await client.list_resources()).resources
                seen["resources"] = {r.name: str(r.uri) for r in resources}
                uri = seen["resources"]["every.architecture.md"]
                seen["read"] = await client.read_resource(uri)
                seen["prompts"] = {p.name for p in (await client.list_prompts()).prompts}
                seen["prompt"] = await client.get_prompt(
                    "every.args-prompt", {"city": "Lyon", "state": "Rhone"}
                )
                seen["pong"] = await client.call_tool("changing.ping", {})
                seen["grown"] = await client.call_tool("changing.grow", {})
                while not any(isinstance(n, types.ToolListChangedNotification) for n in notes):
                    await anyio.sleep(0.05)
                seen["drifted"] = await client.call_tool("changing.ping", {})
        return seen

    seen = anyio.run(main)
    assert seen["before"] == []  # no reviewed list, and nothing listed yet: not started
    assert len(seen["after"]) == 1  # the first tools/list started it
    assert {"every.echo", "every.trigger-long-running-operation", "changing.ping"} <= seen["tools"]

    assert not seen["long"].is_error, seen["long"]
    assert len(progress) >= 2, progress  # the upstream's progress reached this client
    assert progress[-1][0] == progress[-1][1] == 3

    assert "every.architecture.md" in seen["resources"]
    contents = seen["read"].contents
    assert contents and isinstance(contents[0], types.TextResourceContents)
    assert contents[0].text
    assert "every.args-prompt" in seen["prompts"]
    assert "Lyon" in json.dumps(seen["prompt"].model_dump(mode="json"))

    assert not seen["pong"].is_error and not seen["grown"].is_error
    assert _error(seen["drifted"])["code"] == "transport.upstream_drift"

    ledger = build_audit_ledger(load_settings(project))
    try:
        called = [r.event.capability_id for r in ledger.records() if r.event.kind == "invocation"]
    finally:
        ledger.close()
    assert "every.trigger-long-running-operation" in called  # governed and audited


def test_upstream_resource_reads_and_prompt_gets_are_decided_by_the_policy_and_audited(
    aifr_bin: str, clean_env: dict[str, str], tmp_path: Path
) -> None:
    project = _project(aifr_bin, tmp_path, clean_env)
    params = StdioServerParameters(
        command=aifr_bin, args=["mcp", "-p", str(project)], env=clean_env, cwd=str(project)
    )

    async def main() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        with anyio.fail_after(120):
            async with Client(params, mode="legacy") as client:
                seen["tools"] = {t.name for t in (await client.list_tools()).tools}
                listed = {r.name: str(r.uri) for r in (await client.list_resources()).resources}
                seen["read"] = await client.read_resource(listed["every.architecture.md"])
                with pytest.raises(MCPError) as refused:
                    await client.read_resource(listed["every.startup.md"])
                seen["refused"] = refused.value
                seen["prompt"] = await client.get_prompt(
                    "every.args-prompt", {"city": "Lyon", "state": "Rhone"}
                )
        return seen

    seen = anyio.run(main)
    # the synthesized read capabilities are not tools: resources/read and prompts/get are
    assert "every.resources.read" not in seen["tools"]
    assert "every.prompts.get" not in seen["tools"]
    contents = seen["read"].contents
    assert contents and isinstance(contents[0], types.TextResourceContents) and contents[0].text
    refused = seen["refused"]
    assert "policy.denied" in str(refused), refused
    assert "no-startup-notes" in json.dumps(refused.error.data), refused.error.data
    assert "Lyon" in json.dumps(seen["prompt"].model_dump(mode="json"))

    ledger = build_audit_ledger(load_settings(project))
    try:
        events = [
            r.event
            for r in ledger.records()
            if r.event.kind == "invocation" and r.event.capability_id.startswith("every.")
        ]
    finally:
        ledger.close()
    reads = [e for e in events if e.capability_id == "every.resources.read"]
    assert [(e.outcome, e.rule_id) for e in reads] == [
        ("ok", "allow-reads"),
        ("policy.denied", "no-startup-notes"),
    ]
    upstream = reads[0].details["upstream"]
    assert upstream["name"] == "every" and upstream["server_version"]
    assert upstream["resource"] == "demo://resource/static/document/architecture.md"
    gets = [e for e in events if e.capability_id == "every.prompts.get"]
    assert [(e.outcome, e.rule_id) for e in gets] == [("ok", "allow-reads")]
    assert gets[0].details["upstream"]["prompt"] == "args-prompt"
    assert "Lyon" not in repr(gets)  # the prompt arguments are audited as a digest only


def test_aifr_call_and_aifr_run_use_upstream_tools_and_the_run_compensates_on_the_upstream(
    aifr_bin: str, clean_env: dict[str, str], tmp_path: Path
) -> None:
    project = _project(aifr_bin, tmp_path, clean_env)
    files = tmp_path / "files"
    (files / "draft.txt").write_text("draft\n")

    called = run_aifr(
        aifr_bin, "call", "every.echo", "message=hello", "--json", "-p", str(project),
        cwd=project, env=clean_env,
    )  # fmt: skip
    assert called.returncode == 0, called.stderr
    body = json.loads(called.stdout)
    assert body["status"] == "ok"
    assert "Echo: hello" in json.dumps(body["output"])
    assert _processes_naming(str(tmp_path)) == []  # only the upstream it needed started

    ran = run_aifr(
        aifr_bin, "run", "tidy", "-i", f"files={files}", "--json", "-p", str(project),
        cwd=project, env=clean_env,
    )  # fmt: skip
    assert ran.returncode != 0, ran.stdout
    view = json.loads(ran.stdout)
    assert view["state"] == "compensated", view
    assert (files / "draft.txt").read_text() == "draft\n"  # moved back on the upstream
    assert not (files / "final.txt").exists()
    ledger = build_audit_ledger(load_settings(project))
    try:
        steps = [
            (r.event.capability_id, r.event.outcome)
            for r in ledger.records()
            if r.event.kind == "invocation" and r.event.capability_id.startswith("fs.")
        ]
    finally:
        ledger.close()
    assert steps == [
        ("fs.move_file", "ok"),
        ("fs.read_text_file", "transport.upstream_tool_failed"),
        ("fs.move_file", "ok"),
    ]


def test_a_hung_upstream_fails_its_health_check_and_the_next_call_restarts_it(
    aifr_bin: str, clean_env: dict[str, str], tmp_path: Path
) -> None:
    project = tmp_path / "gw"
    assert run_aifr(aifr_bin, "init", str(project), cwd=tmp_path, env=clean_env).returncode == 0
    (project / "policies" / "default.yaml").write_text(POLICY)
    config = project / "aifr.toml"
    config.write_text(
        config.read_text()
        + f"""
[mcp]
principal = "agent"

[[mcp.upstreams]]
name = "changing"
command = {json.dumps([sys.executable, str(CHANGING), str(tmp_path)])}
health_check_s = 0.5
timeout_s = 20
[[mcp.upstreams.risk]]
tools = "*"
operation = "READ"
"""
    )
    params = StdioServerParameters(
        command=aifr_bin, args=["mcp", "-p", str(project)], env=clean_env, cwd=str(project)
    )

    async def main() -> tuple[types.CallToolResult, list[int], types.CallToolResult, list[int]]:
        with anyio.fail_after(60):
            async with Client(params, mode="legacy") as client:
                first = await client.call_tool("changing.ping", {})
                hung = _processes_naming(str(tmp_path))
                for pid in hung:
                    os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing
                try:
                    await anyio.sleep(3)  # a ping or two goes unanswered: it is closed
                    second = await client.call_tool("changing.ping", {})
                    now = _processes_naming(str(tmp_path))
                finally:
                    for pid in hung:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                return first, hung, second, now

    first, hung, second, now = anyio.run(main)
    assert not first.is_error and len(hung) == 1
    # Without the health check the call would wait its 20 s timeout on the stopped server.
    assert not second.is_error, second
    assert [pid for pid in now if pid not in hung], now  # a fresh process answered


APPROVED_MOVES = """\
version: 1
roles:
  approver:
    principals: [alice]
rules:
  - id: moves-need-a-human
    when: {capability: "fs.move_file"}
    decision: REQUIRE_APPROVAL
    reason: moving files needs a human
    approvers: [approver]
"""

PUBLISH = """\
name: publish
inputs:
  files: {type: string}
steps:
  - id: move
    capability: fs.move_file
    inputs: {source: "{{ inputs.files }}/draft.txt", destination: "{{ inputs.files }}/final.txt"}
"""


def test_aifr_worker_resumes_an_approved_run_whose_step_is_an_upstream_tool(
    aifr_bin: str, clean_env: dict[str, str], tmp_path: Path
) -> None:
    project = _project(aifr_bin, tmp_path, clean_env)
    (project / "policies" / "default.yaml").write_text(APPROVED_MOVES)
    (project / "workflows" / "publish.yaml").write_text(PUBLISH)
    files = tmp_path / "files"
    (files / "draft.txt").write_text("draft\n")

    def aifr(*args: str) -> Any:
        return run_aifr(aifr_bin, *args, "-p", str(project), cwd=project, env=clean_env)

    started = aifr("run", "publish", "-i", f"files={files}", "--as", "agent", "--json")
    run = json.loads(started.stdout)
    assert run["state"] == "waiting_approval", started.stderr
    assert (files / "draft.txt").exists()
    approved = aifr("approvals", "approve", run["steps"][0]["approval_id"], "--as", "alice")
    assert approved.returncode == 0, approved.stderr
    resumed = aifr("worker", "--once")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{run['id']}: completed" in resumed.stdout
    assert (files / "final.txt").read_text() == "draft\n"  # moved by the filesystem server
    assert not (files / "draft.txt").exists()
