"""``aifr mcp`` with the SDK's own client over stdio, streamable HTTP and a Unix socket."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp.client.session import ClientRequestContext
from mcp_harness import McpTarget, build_target, run_aifr, start

Decision = dict[str, Any] | None


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


def _effects(target: McpTarget, order_id: int) -> list[str]:
    """The effects recorded for one order (tests sharing a server use distinct orders)."""
    log = target.project / "effects.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line.split()[1] == str(order_id)]


def _text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


def _answering(decision: Decision, asked: list[str]) -> Any:
    async def elicit(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams)
        asked.append(params.message)
        if decision is None:
            return types.ElicitResult(action="decline")
        return types.ElicitResult(action="accept", content=decision)

    return elicit


def _call(
    target: McpTarget, tool: str, arguments: dict[str, Any], **options: Any
) -> types.CallToolResult:
    async def main() -> types.CallToolResult:
        with anyio.fail_after(60):
            async with target.client(**options) as client:
                return await client.call_tool(tool, arguments)

    return anyio.run(main)


def test_tools_allowed_denied_bad_arguments_and_unknown_tool(target: McpTarget) -> None:
    async def main() -> tuple[list[types.Tool], list[types.CallToolResult]]:
        with anyio.fail_after(60):
            async with target.client() as client:
                tools = (await client.list_tools()).tools
                calls = [
                    await client.call_tool("shop.greet", {"name": "Ada", "times": 2}),
                    await client.call_tool("shop.count", {"text": "abcd"}),
                    await client.call_tool("shop.orders.cancel", {"order_id": 7}),
                    await client.call_tool("shop.greet", {"name": "Ada", "times": 9}),
                    await client.call_tool("shop.greet", {}),
                    await client.call_tool("shop.nope", {}),
                ]
                return tools, calls

    tools, (greeted, counted, denied, too_many, missing, unknown) = anyio.run(main)
    listed = {tool.name: tool for tool in tools}
    assert {"shop.greet", "shop.count", "shop.orders.cancel", "shop.refund"} <= set(listed)
    assert {"aifr.approvals.status", "workflow.welcome", "workflow.goodwill"} <= set(listed)
    greet = listed["shop.greet"]
    assert greet.input_schema["required"] == ["name"]
    assert greet.input_schema["properties"]["times"]["maximum"] == 3
    assert greet.output_schema == {"type": "object", "additionalProperties": {"type": "string"}}
    assert greet.annotations is not None
    assert greet.annotations.read_only_hint is True
    refund = listed["shop.refund"].annotations
    assert refund is not None
    assert (refund.read_only_hint, refund.destructive_hint) == (False, False)
    assert listed["shop.count"].output_schema == {
        "type": "object",
        "properties": {"result": {"type": "integer"}},
        "required": ["result"],
    }

    assert greeted.is_error is False
    assert greeted.structured_content == {"greeting": "Hello, Ada! Hello, Ada!"}
    assert greeted.meta is not None
    assert (greeted.meta["aifr/decision"], greeted.meta["aifr/rule_id"]) == ("ALLOW", "allow-reads")
    assert counted.structured_content == {"result": 4}

    payload = error_of(denied)
    assert payload["error"]["code"] == "policy.denied"
    assert payload["rule_id"] == "no-cancel-by-agents"
    assert "cancelled by people" in payload["reason"]
    assert "no-cancel-by-agents" in _text(denied)
    assert _effects(target, 7) == []

    payload = error_of(too_many)
    assert payload["error"]["code"] == "input.invalid"
    assert [e["path"] for e in payload["error"]["details"]["errors"]] == ["times"]
    assert "times" in _text(too_many)
    assert [e["path"] for e in error_of(missing)["error"]["details"]["errors"]] == ["name"]
    assert error_of(unknown)["error"]["code"] == "capability.not_found"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_approval_through_elicitation_records_the_operator_and_runs_once(
    target: McpTarget, mode: str
) -> None:
    order = 31 if mode == "legacy" else 32
    asked: list[str] = []
    result = _call(
        target,
        "shop.refund",
        {"order_id": order, "amount": 12.5},
        mode=mode,
        elicitation_callback=_answering({"decision": "approve", "comment": "ok"}, asked),
    )
    assert result.is_error is False, _text(result)
    assert result.structured_content == {"order_id": order, "refunded": 12.5}
    assert len(asked) == 1
    assert "shop.refund" in asked[0]
    assert "refunds move money" in asked[0]
    assert _effects(target, order) == [f"refund {order} 12.5"]
    shown = run_aifr(
        target.aifr_bin,
        "approvals",
        "list",
        "--json",
        "-p",
        str(target.project),
        cwd=target.project,
        env=target.env,
    )
    assert shown.returncode == 0, shown.stderr
    decided = [
        a for a in json.loads(shown.stdout) if a["inputs"] == {"order_id": order, "amount": 12.5}
    ]
    assert [v["approver"] for v in decided[0]["votes"]] == ["alice"]


def test_rejected_and_dismissed_forms(target: McpTarget) -> None:
    answers: list[types.ElicitResult] = [
        types.ElicitResult(action="accept", content={"decision": "reject", "comment": "no"}),
        types.ElicitResult(action="decline"),
    ]

    async def elicit(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        return answers.pop(0)

    async def main() -> tuple[types.CallToolResult, types.CallToolResult]:
        with anyio.fail_after(60):
            async with target.client(elicitation_callback=elicit) as client:
                rejected = await client.call_tool("shop.refund", {"order_id": 41, "amount": 1.0})
                declined = await client.call_tool("shop.refund", {"order_id": 42, "amount": 2.0})
                return rejected, declined

    rejected, declined = anyio.run(main)
    assert error_of(rejected)["error"]["code"] == "approval.rejected"
    payload = error_of(declined)
    assert payload["status"] == "pending_approval"
    assert payload["error"]["code"] == "approval.required"
    assert _effects(target, 41) == []
    assert _effects(target, 42) == []


def test_without_elicitation_the_call_is_pending_until_approved_then_runs_once(
    target: McpTarget,
) -> None:
    arguments = {"order_id": 9, "amount": 4.5}

    async def main() -> tuple[types.CallToolResult, ...]:
        with anyio.fail_after(90):
            async with target.client() as client:
                pending = await client.call_tool("shop.refund", arguments)
                approval_id = error_of(pending)["approval_id"]
                status_before = await client.call_tool(
                    "aifr.approvals.status", {"approval_id": approval_id}
                )
                approved = await anyio.to_thread.run_sync(
                    lambda: run_aifr(
                        target.aifr_bin,
                        "approvals",
                        "approve",
                        approval_id,
                        "--as",
                        "alice",
                        "-p",
                        str(target.project),
                        cwd=target.project,
                        env=target.env,
                    )
                )
                assert approved.returncode == 0, approved.stderr
                ran = await client.call_tool("shop.refund", arguments)
                again = await client.call_tool("shop.refund", arguments)
                status_after = await client.call_tool(
                    "aifr.approvals.status", {"approval_id": approval_id}
                )
                return pending, status_before, ran, again, status_after

    pending, status_before, ran, again, status_after = anyio.run(main)
    payload = error_of(pending)
    assert payload["status"] == "pending_approval"
    assert payload["rule_id"] == "refunds-need-a-human"
    assert payload["approver_roles"] == ["approver"]
    assert "aifr approvals approve" in payload["how_to_approve"]
    assert status_before.structured_content is not None
    assert status_before.structured_content["status"] == "pending"
    assert ran.is_error is False, _text(ran)
    assert ran.structured_content == {"order_id": 9, "refunded": 4.5}
    assert error_of(again)["status"] == "pending_approval"
    assert status_after.structured_content is not None
    assert status_after.structured_content["status"] == "consumed"
    assert _effects(target, 9) == ["refund 9 4.5"]


def test_workflows_are_tools_with_progress_per_step(target: McpTarget) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def main() -> list[types.CallToolResult]:
        with anyio.fail_after(60):
            async with target.client() as client:
                return [
                    await client.call_tool(
                        "workflow.welcome", {"name": "Ada"}, progress_callback=on_progress
                    ),
                    await client.call_tool("workflow.goodwill", {"order": 77}),
                    await client.call_tool("workflow.welcome", {"name": 3}),
                ]

    completed, paused, invalid = anyio.run(main)
    assert completed.is_error is False, _text(completed)
    run = completed.structured_content
    assert run is not None
    assert run["state"] == "completed"
    assert [s["output"] for s in run["steps"]] == [{"greeting": "Hello, Ada! Hello, Ada!"}, 23]
    # MCP: each notification's progress is greater than the last; the run's end is a unit.
    assert [(value, total) for value, total, _ in progress] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert progress[1][2] == "shop.greet ok"
    assert progress[-1][2] is not None
    assert progress[-1][2].endswith("completed")

    payload = error_of(paused)
    assert payload["error"]["code"] == "approval.required"
    assert payload["status"] == "pending_approval"
    assert payload["approval_id"].startswith("ap-")
    assert payload["run"]["state"] == "waiting_approval"
    assert "aifr runs resume" in _text(paused)
    assert _effects(target, 77) == []

    payload = error_of(invalid)
    assert payload["error"]["code"] == "input.invalid"
    assert [e["path"] for e in payload["error"]["details"]["errors"]] == ["name"]


def test_resources_show_the_manifest_and_the_callers_audit_records(target: McpTarget) -> None:
    async def main() -> tuple[list[str], list[str], Any, Any]:
        with anyio.fail_after(60):
            async with target.client() as client:
                await client.call_tool("shop.greet", {"name": "Bo"})
                listed = [str(r.uri) for r in (await client.list_resources()).resources]
                templates = [
                    t.uri_template
                    for t in (await client.list_resource_templates()).resource_templates
                ]
                manifest = await client.read_resource("aifr://capabilities/manifest")
                audit = await client.read_resource("aifr://audit/recent")
                return listed, templates, manifest, audit

    listed, templates, manifest, audit = anyio.run(main)
    assert {"aifr://capabilities/manifest", "aifr://audit/recent"} <= set(listed)
    assert {"aifr://runs/{run_id}", "aifr://approvals/{approval_id}"} <= set(templates)
    document = json.loads(manifest.contents[0].text)
    assert "shop.greet" in {c["id"] for c in document["capabilities"]}
    records = json.loads(audit.contents[0].text)["records"]
    assert records
    assert {r["principal"] for r in records} == {"agent"}
    assert any(r.get("capability_id") == "shop.greet" for r in records)


@pytest.mark.parametrize("transport", ["stdio", "uds"])
def test_an_operator_who_may_not_approve_gets_a_clear_refusal(
    transport: str, aifr_bin: str, tmp_path: Path, clean_env: dict[str, str], short_dir: Path
) -> None:
    target = start(build_target(transport, aifr_bin, tmp_path, clean_env, short_dir, operator=None))
    try:
        result = _call(
            target,
            "shop.refund",
            {"order_id": 6, "amount": 3.0},
            elicitation_callback=_answering({"decision": "approve"}, []),
        )
    finally:
        for server in target.servers:
            server.stop()
    payload = error_of(result)
    assert payload["error"]["code"] == "approval.self_approval"
    assert payload["status"] == "pending_approval"
    assert "not recorded" in _text(result)
    assert _effects(target, 6) == []


def test_http_without_a_token_is_refused_with_401(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str], short_dir: Path
) -> None:
    target = start(build_target("http", aifr_bin, tmp_path, clean_env, short_dir))
    try:
        assert target.url is not None
        message = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        headers = {"Accept": "application/json, text/event-stream"}
        anonymous = httpx.post(target.url, json=message, headers=headers, timeout=30)
        forged = httpx.post(
            target.url,
            json=message,
            headers={**headers, "Authorization": "Bearer forged"},
            timeout=30,
        )
    finally:
        for server in target.servers:
            server.stop()
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "transport.unauthenticated"
    assert forged.status_code == 401


def test_a_socket_peer_acts_as_the_principal_its_uid_maps_to(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str], short_dir: Path
) -> None:
    built = build_target("uds", aifr_bin, tmp_path, clean_env, short_dir)
    config = built.project / "aifr.toml"  # the [mcp] table is last: the key lands in it
    config.write_text(
        config.read_text() + f'uid_principals = {{ "{os.getuid()}" = "uds-owner" }}\n'
    )
    target = start(built)

    async def main() -> tuple[types.CallToolResult, Any]:
        with anyio.fail_after(60):
            async with target.client() as client:
                greeted = await client.call_tool("shop.greet", {"name": "Uid"})
                return greeted, await client.read_resource("aifr://audit/recent")

    try:
        greeted, audit = anyio.run(main)
    finally:
        for server in target.servers:
            server.stop()
    assert greeted.is_error is False, _text(greeted)
    document = json.loads(audit.contents[0].text)
    assert document["principal"] == "uds-owner"
    assert [(r["principal"], r["capability_id"]) for r in document["records"]] == [
        ("uds-owner", "shop.greet")
    ]


CLAUDE_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # Claude Desktop refuses a list otherwise


def test_portable_tool_names_satisfy_claude_and_calls_by_listed_name_or_id_both_work(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str], short_dir: Path
) -> None:
    """``[mcp] tool_names = "portable"``: every name passes Claude's rule; ids still work."""
    target = build_target("stdio", aifr_bin, tmp_path, clean_env, short_dir)
    config = target.project / "aifr.toml"  # the [mcp] table is last: the key lands in it
    config.write_text(config.read_text() + 'tool_names = "portable"\n')

    async def main() -> tuple[list[types.Tool], list[types.CallToolResult]]:
        with anyio.fail_after(60):
            async with target.client() as client:
                tools = (await client.list_tools()).tools
                pending = await client.call_tool("shop_refund", {"order_id": 31, "amount": 1.0})
                approval_id = error_of(pending)["approval_id"]
                return tools, [
                    await client.call_tool("shop_greet", {"name": "Ada"}),
                    await client.call_tool("shop.greet", {"name": "Bo"}),
                    pending,
                    await client.call_tool("aifr_approvals_status", {"approval_id": approval_id}),
                    await client.call_tool("workflow_welcome", {"name": "Cy"}),
                    await client.call_tool("shop_greet", {"name": ""}),
                ]

    tools, (by_name, by_id, pending, status, workflow, invalid) = anyio.run(main)
    names = [tool.name for tool in tools]
    assert all(CLAUDE_TOOL_NAME.fullmatch(name) for name in names), names
    assert {"shop_greet", "shop_refund", "workflow_welcome", "aifr_approvals_status"} <= set(names)
    greet = next(tool for tool in tools if tool.name == "shop_greet")
    assert greet.meta is not None and greet.meta["aifr/capability"] == "shop.greet"
    assert by_name.structured_content == {"greeting": "Hello, Ada!"}
    assert by_id.structured_content == {"greeting": "Hello, Bo!"}
    how = error_of(pending)["how_to_approve"]
    assert "call shop_refund again" in how
    assert "aifr_approvals_status tool" in how
    assert status.structured_content is not None
    assert status.structured_content["status"] == "pending"
    assert workflow.is_error is False, _text(workflow)
    assert error_of(invalid)["error"]["details"]["errors"][0]["path"] == "name"
    records = run_aifr(
        aifr_bin, "audit", "export", "-p", str(target.project), cwd=target.project, env=clean_env
    )
    audited = [json.loads(line) for line in records.stdout.splitlines()]
    calls = [r["capability_id"] for r in audited if r["kind"] == "invocation" and not r["run_id"]]
    # audited (and decided by policy) under the capability id, whatever the tool name
    assert sorted(calls) == ["shop.greet"] * 3 + ["shop.refund"]
