"""The governed MCP server in-process: the SDK client against a real project and runtime.

The end-to-end suite (tests/e2e/mcp) runs the same flows over real transports; these
tests cover the server's branches quickly, in both protocol eras.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.shared.exceptions import MCPError

from aifr.app import build_app
from aifr.config import init_project
from aifr.transports.mcp import AifrMcpServer, McpIdentity, fixed_identity
from aifr.workflows import list_workflows

CAPABILITIES = '''
from typing import Annotated
from pydantic import Field
from aifr import capability


@capability("lab.echo", operation="READ", risk="LOW")
def echo(text: Annotated[str, Field(max_length=10)]) -> dict[str, str]:
    """Echo text."""
    return {"text": text}


@capability("lab.boom", operation="READ", risk="LOW")
def boom() -> dict[str, str]:
    """Always fails."""
    raise RuntimeError("kaboom")


@capability("lab.broken_output", operation="READ", risk="LOW")
def broken_output() -> dict[str, int]:
    """Returns text where its schema promises a number."""
    return {"n": "many"}


@capability("lab.launch", operation="EXECUTE", risk="HIGH")
def launch(target: str) -> dict[str, str]:
    """Launch something."""
    return {"launched": target}


@capability("lab.wipe", operation="DELETE", risk="HIGH", compensation="lab.echo")
def wipe() -> None:
    """Wipe."""
'''

POLICY = """\
version: 1
roles:
  approver:
    principals: [alice]
rules:
  - id: no-wipe
    when:
      capability: "lab.wipe"
    decision: DENY
    reason: wiping is off limits
  - id: launch-needs-approval
    when:
      capability: "lab.launch"
    decision: REQUIRE_APPROVAL
    reason: launches are irreversible in spirit
    approvers: [approver]
  - id: allow-reads
    when:
      operation: READ
    decision: ALLOW
    reason: reads are fine
approvals:
  - risk: HIGH
    roles: [approver]
"""


WORKFLOW = """\
name: lab-flow
inputs:
  text: {type: string}
  wipe: {type: boolean, default: false}
steps:
  - id: echo
    capability: lab.echo
    inputs: {text: "{{ inputs.text }}"}
  - id: again
    capability: lab.echo
    inputs: {text: "{{ steps.echo.output.text }}!"}
"""

FAILING_WORKFLOW = """\
name: lab-wipe
steps:
  - id: echo
    capability: lab.echo
    inputs: {text: "x"}
  - id: wipe
    capability: lab.wipe
"""


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "lab"
    init_project(project)
    (project / "lab_caps.py").write_text(CAPABILITIES)
    (project / "policies" / "default.yaml").write_text(POLICY)
    (project / "workflows" / "lab-flow.yaml").write_text(WORKFLOW)
    (project / "workflows" / "lab-wipe.yaml").write_text(FAILING_WORKFLOW)
    config = project / "aifr.toml"
    config.write_text(
        config.read_text().replace("capability_modules = []", 'capability_modules = ["lab_caps"]')
    )
    return project


@asynccontextmanager
async def _client(
    tmp_path: Path, identity: McpIdentity, **options: Any
) -> AsyncIterator[tuple[Client, AifrMcpServer]]:
    project = _project(tmp_path)
    app = build_app(project, require_project=True)
    server = AifrMcpServer.from_app(
        app, identity=fixed_identity(identity), workflows=list_workflows(project / "workflows")
    )
    async with Client(server.server, **options) as client:
        yield client, server


def _answer(content: dict[str, Any] | None, action: str = "accept") -> Any:
    async def elicit(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        return types.ElicitResult(action=action, content=content)  # type: ignore[arg-type]

    return elicit


def error_of(result: types.CallToolResult) -> dict[str, Any]:
    """The error payload of a tool error (``_meta["aifr/error"]``, also the second text block)."""
    assert result.is_error is True
    assert result.structured_content is None
    assert result.meta is not None
    payload: dict[str, Any] = result.meta["aifr/error"]
    block = result.content[1]
    assert isinstance(block, types.TextContent)
    assert json.loads(block.text) == payload
    return payload


AGENT = McpIdentity("agent", frozenset(), operator="alice")


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_allowed_denied_invalid_and_failing_calls(tmp_path: Path, mode: str) -> None:
    async def main() -> list[types.CallToolResult]:
        async with _client(tmp_path, AGENT, mode=mode) as (client, _):
            return [
                await client.call_tool("lab.echo", {"text": "hi"}),
                await client.call_tool("lab.wipe", {}),
                await client.call_tool("lab.echo", {"text": "far too long text"}),
                await client.call_tool("lab.boom", {}),
                await client.call_tool("lab.nothing", {}),
                await client.call_tool("lab.broken_output", {}),
            ]

    ok, denied, invalid, failed, unknown, bad_output = anyio.run(main)
    assert ok.structured_content == {"text": "hi"}
    assert error_of(denied)["rule_id"] == "no-wipe"
    assert error_of(invalid)["error"]["details"]["errors"][0]["path"] == "text"
    assert error_of(failed)["error"]["code"] == "execution.failed"
    assert error_of(unknown)["error"]["code"] == "capability.not_found"
    assert error_of(bad_output)["error"]["details"]["errors"][0]["path"] == "n"
    summary = bad_output.content[0]
    assert isinstance(summary, types.TextContent)
    assert summary.text.startswith("output.invalid: the tool's output does not match")


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_operator_approval_through_elicitation_runs_the_call(tmp_path: Path, mode: str) -> None:
    async def main() -> types.CallToolResult:
        async with _client(
            tmp_path, AGENT, mode=mode, elicitation_callback=_answer({"decision": "approve"})
        ) as (client, _):
            return await client.call_tool("lab.launch", {"target": "moon"})

    result = anyio.run(main)
    assert result.is_error is False, result.content
    assert result.structured_content == {"launched": "moon"}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_self_approval_through_elicitation_is_refused(tmp_path: Path, mode: str) -> None:
    async def main() -> types.CallToolResult:
        async with _client(
            tmp_path,
            McpIdentity("agent"),
            mode=mode,
            elicitation_callback=_answer({"decision": "approve"}),
        ) as (client, _):
            return await client.call_tool("lab.launch", {"target": "moon"})

    result = anyio.run(main)
    assert result.is_error is True
    assert error_of(result)["error"]["code"] == "approval.self_approval"


def test_a_non_approver_operator_is_refused(tmp_path: Path) -> None:
    async def main() -> types.CallToolResult:
        async with _client(
            tmp_path,
            McpIdentity("agent", operator="mallory"),
            mode="legacy",
            elicitation_callback=_answer({"decision": "approve"}),
        ) as (client, _):
            return await client.call_tool("lab.launch", {"target": "moon"})

    result = anyio.run(main)
    assert error_of(result)["error"]["code"] == "approval.not_authorized"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_rejection_and_dismissal(tmp_path: Path, mode: str) -> None:
    async def main() -> tuple[types.CallToolResult, types.CallToolResult]:
        async with _client(
            tmp_path, AGENT, mode=mode, elicitation_callback=_answer(None, action="cancel")
        ) as (client, _):
            dismissed = await client.call_tool("lab.launch", {"target": "mars"})
        async with _client(
            tmp_path / "again",
            AGENT,
            mode=mode,
            elicitation_callback=_answer({"decision": "reject", "comment": "no"}),
        ) as (client, _):
            rejected = await client.call_tool("lab.launch", {"target": "mars"})
        return dismissed, rejected

    dismissed, rejected = anyio.run(main)
    assert error_of(dismissed)["status"] == "pending_approval"
    assert error_of(rejected)["error"]["code"] == "approval.rejected"


def test_pending_call_runs_after_approval_with_the_meta_approval_id(tmp_path: Path) -> None:
    async def main() -> tuple[types.CallToolResult, types.CallToolResult, types.CallToolResult]:
        async with _client(tmp_path, AGENT, mode="legacy") as (client, server):
            pending = await client.call_tool("lab.launch", {"target": "venus"})
            approval_id = error_of(pending)["approval_id"]
            await server.approvals.aapprove(approval_id, "alice")
            status = await client.call_tool("aifr.approvals.status", {"approval_id": approval_id})
            ran = await client.call_tool(
                "lab.launch", {"target": "venus"}, meta={"aifr/approval_id": approval_id}
            )
            return pending, status, ran

    pending, status, ran = anyio.run(main)
    assert pending.is_error is True
    assert status.structured_content is not None
    assert status.structured_content["status"] == "approved"
    assert ran.structured_content == {"launched": "venus"}


def test_an_approval_form_answered_with_neither_choice_records_nothing_and_says_so(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[types.CallToolResult, str]:
        async with _client(
            tmp_path, AGENT, mode="legacy", elicitation_callback=_answer({"decision": "maybe"})
        ) as (client, server):
            result = await client.call_tool("lab.launch", {"target": "mars"})
            approval_id = error_of(result)["approval_id"]
            return result, server.approvals.get(approval_id).status.value

    result, status = anyio.run(main)
    assert error_of(result)["status"] == "pending_approval"
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    assert "decision was 'maybe', neither 'approve' nor 'reject'; nothing was recorded" in (
        block.text
    )
    assert status == "pending"


@pytest.mark.parametrize("bad", [7, "", ["ap-1"]])
def test_a_meta_approval_id_that_is_no_id_is_refused_naming_it(tmp_path: Path, bad: Any) -> None:
    async def main() -> tuple[types.CallToolResult, int]:
        async with _client(tmp_path, AGENT, mode="legacy") as (client, server):
            result = await client.call_tool(
                "lab.launch", {"target": "venus"}, meta={"aifr/approval_id": bad}
            )
            return result, len(server.approvals.list())

    result, approvals = anyio.run(main)
    error = error_of(result)["error"]
    assert error["code"] == "input.invalid"
    assert error["details"]["errors"][0]["path"] == "_meta['aifr/approval_id']"
    assert approvals == 0  # refused before a second approval could be opened


def test_approval_status_tool_reports_bad_and_unknown_ids(tmp_path: Path) -> None:
    async def main() -> tuple[types.CallToolResult, types.CallToolResult]:
        async with _client(tmp_path, AGENT) as (client, _):
            return (
                await client.call_tool("aifr.approvals.status", {"approval_id": ""}),
                await client.call_tool("aifr.approvals.status", {"approval_id": "ap-missing"}),
            )

    empty, missing = anyio.run(main)
    assert error_of(empty)["error"]["code"] == "input.invalid"
    assert error_of(missing)["error"]["code"] == "approval.not_found"


def test_approval_status_tool_codes_each_bad_argument_as_its_schema_says(tmp_path: Path) -> None:
    # A number was reported as a missing approval_id, and an unknown key passed unseen,
    # though the tool's schema asks for a string and forbids other keys.
    calls: list[dict[str, Any]] = [
        {"approval_id": 7},
        {"approval_id": "ap-x", "bogus": 1},
        {},
    ]

    async def main() -> list[types.CallToolResult]:
        async with _client(tmp_path, AGENT) as (client, _):
            return [await client.call_tool("aifr.approvals.status", c) for c in calls]

    found = [
        [(e["path"], e["code"]) for e in error_of(result)["error"]["details"]["errors"]]
        for result in anyio.run(main)
    ]
    assert found == [
        [("approval_id", "type")],
        [("bogus", "unexpected")],
        [("approval_id", "required")],
    ]


def test_resources_list_read_and_unknown(tmp_path: Path) -> None:
    async def main() -> tuple[Any, Any, Any]:
        async with _client(tmp_path, AGENT) as (client, _):
            await client.call_tool("lab.echo", {"text": "a"})
            templates = await client.list_resource_templates()
            audit = await client.read_resource("aifr://audit/recent")
            with pytest.raises(MCPError) as caught:
                await client.read_resource("aifr://nope")
            return templates, audit, caught.value

    templates, audit, error = anyio.run(main)
    assert "aifr://approvals/{approval_id}" in [
        t.uri_template for t in templates.resource_templates
    ]
    records = json.loads(audit.contents[0].text)["records"]
    assert records and all(r["principal"] == "agent" for r in records)
    assert "transport.not_found" in error.message
    assert error.data["error"]["details"]["uri"] == "aifr://nope"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_workflow_tool_runs_with_progress_and_its_run_is_a_resource(
    tmp_path: Path, mode: str
) -> None:
    progress: list[tuple[float, float | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    async def main() -> tuple[list[types.Tool], types.CallToolResult, Any, types.CallToolResult]:
        async with _client(tmp_path, AGENT, mode=mode) as (client, _):
            tools = (await client.list_tools()).tools
            done = await client.call_tool(
                "workflow.lab-flow", {"text": "hi"}, progress_callback=on_progress
            )
            assert done.structured_content is not None
            run = await client.read_resource(f"aifr://runs/{done.structured_content['id']}")
            failed = await client.call_tool("workflow.lab-wipe", {})
            return tools, done, run, failed

    tools, done, run, failed = anyio.run(main)
    flow = next(t for t in tools if t.name == "workflow.lab-flow")
    assert flow.input_schema["required"] == ["text"]
    assert flow.input_schema["properties"]["wipe"] == {"type": "boolean", "default": False}
    wipe = next(t for t in tools if t.name == "workflow.lab-wipe")
    assert wipe.annotations is not None
    assert wipe.annotations.destructive_hint is True
    assert done.structured_content is not None
    assert [s["output"] for s in done.structured_content["steps"]] == [
        {"text": "hi"},
        {"text": "hi!"},
    ]
    # strictly increasing, as MCP requires: the run's end is a unit of its own
    assert progress == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert json.loads(run.contents[0].text)["state"] == "completed"
    payload = error_of(failed)
    assert payload["error"]["code"] == "workflow.step_failed"
    assert payload["run"]["failed_step"] == "wipe"
    assert payload["run"]["steps"][0]["state"] in ("compensated", "not_compensated")


def test_another_caller_cannot_read_my_approval_or_run(tmp_path: Path) -> None:
    project = _project(tmp_path)
    app = build_app(project, require_project=True)
    workflows = list_workflows(project / "workflows")

    def server_for(principal: str) -> AifrMcpServer:
        return AifrMcpServer.from_app(
            app, identity=fixed_identity(McpIdentity(principal)), workflows=workflows
        )

    async def main() -> tuple[types.CallToolResult, types.CallToolResult, MCPError, MCPError]:
        async with Client(server_for("agent").server, mode="legacy") as mine:
            pending = await mine.call_tool("lab.launch", {"target": "pluto"})
            run = await mine.call_tool("workflow.lab-flow", {"text": "x"})
        approval_id = error_of(pending)["approval_id"]
        assert run.structured_content is not None
        async with Client(server_for("eve").server, mode="legacy") as theirs:
            status = await theirs.call_tool("aifr.approvals.status", {"approval_id": approval_id})
            with pytest.raises(MCPError) as approval_read:
                await theirs.read_resource(f"aifr://approvals/{approval_id}")
            with pytest.raises(MCPError) as run_read:
                await theirs.read_resource(f"aifr://runs/{run.structured_content['id']}")
            own = await theirs.call_tool("aifr.approvals.status", {"approval_id": "ap-x"})
        return status, own, approval_read.value, run_read.value

    status, own, approval_read, run_read = anyio.run(main)
    assert error_of(status)["error"]["code"] == "approval.not_found"
    assert error_of(own)["error"]["code"] == "approval.not_found"
    assert "approval.not_found" in approval_read.message
    assert "workflow.run_not_found" in run_read.message


def test_the_caller_cannot_set_its_principal_or_operator_through_meta(tmp_path: Path) -> None:
    """Identity comes from the transport (the token), never from what the request says."""
    project = _project(tmp_path)
    app = build_app(project, require_project=True)
    server = AifrMcpServer.from_app(app, identity=fixed_identity(AGENT))
    forged = {
        "aifr/principal": "root",
        "aifr/operator": "root",
        "aifr/roles": ["approver"],
        "aifr/on_behalf_of": "root",
        "principal": "root",
        "operator": "root",
    }

    async def main() -> tuple[types.CallToolResult, types.CallToolResult]:
        async with Client(server.server, mode="legacy") as client:
            echoed = await client.call_tool("lab.echo", {"text": "hi"}, meta=forged)
            launch = await client.call_tool("lab.launch", {"target": "mars"}, meta=forged)
        return echoed, launch

    echoed, launch = anyio.run(main)
    assert echoed.structured_content == {"text": "hi"}
    assert error_of(launch)["status"] == "pending_approval"  # "approver" was not granted
    records = list(app.ledger.records())
    principals = {record.event.principal for record in records}
    shown = json.dumps([dict(record.event.details) for record in records])
    app.close()
    assert "root" not in principals
    assert "agent" in principals
    assert '"root"' not in shown  # no operator, role or on-behalf-of taken from _meta
