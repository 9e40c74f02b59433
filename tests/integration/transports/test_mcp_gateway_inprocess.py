"""Tool filtering per caller, and the gateway's upstream config, in-process with the SDK client.

``list_tools="permitted"`` leaves out what the policy denies a caller whatever the
inputs; the gateway resolves ``secret://`` references for an upstream's environment
and holds it to ``max_calls_per_minute``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from mcp import Client

from aifr.app import build_app
from aifr.capabilities import CapabilityRegistry
from aifr.config import UpstreamSettings, UpstreamToolRisk, init_project
from aifr.errors import AifrError, ErrorCode
from aifr.invocation import EnvSecretProvider, SecretResolver
from aifr.transports.mcp import AifrMcpServer, McpIdentity, fixed_identity
from aifr.transports.mcp.gateway import Gateway, spec_for_tool

REPO = Path(__file__).resolve().parents[3]
EVERYTHING = REPO / ".tools" / "node_modules" / ".bin" / "mcp-server-everything"

CAPABILITIES = '''
from aifr import capability


@capability("lab.echo", operation="READ", risk="LOW")
def echo(text: str) -> dict[str, str]:
    """Echo text."""
    return {"text": text}


@capability("lab.transfer", operation="WRITE", risk="MEDIUM")
def transfer(amount: int) -> dict[str, int]:
    """Move money."""
    return {"moved": amount}


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
  admin:
    principals: [root]
rules:
  - id: admins-may-wipe
    when: {capability: "lab.wipe", roles: [admin]}
    decision: ALLOW
  - id: no-wipe
    when: {capability: "lab.wipe"}
    decision: DENY
    reason: wiping is off limits
  - id: no-big-transfers
    when: {capability: "lab.transfer", inputs: {amount: {gt: 100}}}
    decision: DENY
  - id: launch-needs-approval
    when: {capability: "lab.launch"}
    decision: REQUIRE_APPROVAL
    approvers: [approver]
  - id: allow-the-rest
    when: {capability: "lab.*"}
    decision: ALLOW
approvals:
  - risk: HIGH
    roles: [approver]
"""


def _server(tmp_path: Path, who: McpIdentity, listing: str) -> AifrMcpServer:
    project = tmp_path / "lab"
    if not project.exists():
        init_project(project)
        (project / "gw_lab_caps.py").write_text(CAPABILITIES)
        (project / "policies" / "default.yaml").write_text(POLICY)
        config = project / "aifr.toml"
        config.write_text(
            config.read_text().replace(
                "capability_modules = []", 'capability_modules = ["gw_lab_caps"]'
            )
        )
    app = build_app(project, require_project=True)
    return AifrMcpServer.from_app(
        app,
        identity=fixed_identity(who),
        list_tools="permitted" if listing == "permitted" else "all",
    )


def _listed(server: AifrMcpServer) -> set[str]:
    async def main() -> set[str]:
        async with Client(server.server) as client:
            return {tool.name for tool in (await client.list_tools()).tools}

    return anyio.run(main)


def test_permitted_listing_leaves_out_tools_denied_whatever_the_inputs(tmp_path: Path) -> None:
    agent = McpIdentity(principal="agent")
    listed = _listed(_server(tmp_path, agent, "permitted"))
    assert "lab.wipe" not in listed  # denied to agent whatever it sends
    assert {"lab.echo", "lab.launch", "lab.transfer"} <= listed  # allowed, approval, depends
    assert "io.fs.delete" not in listed  # HIGH stdlib tools: the default denies them


def test_permitted_listing_keeps_a_tool_the_callers_role_may_use(tmp_path: Path) -> None:
    by_binding = _listed(_server(tmp_path, McpIdentity(principal="root"), "permitted"))
    by_token = _listed(
        _server(tmp_path, McpIdentity(principal="bot", roles=frozenset({"admin"})), "permitted")
    )
    assert "lab.wipe" in by_binding
    assert "lab.wipe" in by_token


def test_all_listing_shows_every_tool(tmp_path: Path) -> None:
    listed = _listed(_server(tmp_path, McpIdentity(principal="agent"), "all"))
    assert {"lab.wipe", "io.fs.delete", "lab.echo"} <= listed


def test_a_denied_tool_left_out_of_the_list_is_still_refused_when_called(tmp_path: Path) -> None:
    server = _server(tmp_path, McpIdentity(principal="agent"), "permitted")

    async def main() -> bool:
        async with Client(server.server) as client:
            result = await client.call_tool("lab.wipe", {})
            assert result.meta is not None
            return bool(result.is_error) and (
                result.meta["aifr/error"]["error"]["code"] == "policy.denied"
            )

    assert anyio.run(main)


def _everything(**extra: object) -> UpstreamSettings:
    if not EVERYTHING.exists():
        pytest.fail("server-everything is not installed: run `make mcp-servers` (make test does)")
    return UpstreamSettings.model_validate({"name": "every", "command": [str(EVERYTHING)], **extra})


def test_upstream_env_secrets_are_resolved_by_the_secret_resolver() -> None:
    resolver = SecretResolver([EnvSecretProvider({"UPSTREAM_TOKEN": "s3cr3t-value"})])
    config = _everything(env={"MARKER": "secret://UPSTREAM_TOKEN", "PLAIN": "as-is"})
    gateway = Gateway([config], resolver.resolve, errlog=sys.stderr)
    try:
        registry = CapabilityRegistry()
        assert gateway.register(registry) == []
        output = asyncio.run(registry.resolve("every.get-env").handler())
    finally:
        gateway.close()
    text = str(output)
    assert "s3cr3t-value" in text
    assert "as-is" in text


def test_an_unresolvable_upstream_secret_keeps_its_tools_out_and_says_why() -> None:
    gateway = Gateway(
        [_everything(env={"MARKER": "secret://MISSING"})],
        SecretResolver([]).resolve,
        errlog=sys.stderr,
    )
    try:
        registry = CapabilityRegistry()
        failures = gateway.register(registry)
    finally:
        gateway.close()
    assert len(failures) == 1
    assert "MISSING" in failures[0]
    assert not any(spec.id.startswith("every.") for spec in registry.list())


def test_calls_over_the_upstreams_budget_are_refused() -> None:
    gateway = Gateway([_everything(max_calls_per_minute=2)], str, errlog=sys.stderr)
    try:
        registry = CapabilityRegistry()
        gateway.register(registry)
        echo = registry.resolve("every.echo").handler
        assert echo is not None
        asyncio.run(echo(message="one"))
        asyncio.run(echo(message="two"))
        with pytest.raises(AifrError) as refused:
            asyncio.run(echo(message="three"))
    finally:
        gateway.close()
    assert refused.value.code is ErrorCode.POLICY_RATE_LIMITED


def test_resource_reads_and_prompt_gets_are_read_capabilities_that_spend_the_budget() -> None:
    config = _everything(max_calls_per_minute=3, resources=True, prompts=True)
    gateway = Gateway([config], str, errlog=sys.stderr)
    try:
        registry = CapabilityRegistry()
        gateway.register(registry)
        read = registry.resolve("every.resources.read")
        get = registry.resolve("every.prompts.get")
        assert read.spec.operation_type.value == "READ" and read.spec.effective_risk.value == "LOW"
        uri = "demo://resource/static/document/architecture.md"
        assert read.handler is not None and get.handler is not None
        body = asyncio.run(read.handler(uri=uri))
        prompt = asyncio.run(get.handler(name="simple-prompt"))
        echo = registry.resolve("every.echo").handler
        assert echo is not None
        asyncio.run(echo(message="third call of the minute"))
        with pytest.raises(AifrError) as refused:
            asyncio.run(read.handler(uri=uri))
    finally:
        gateway.close()
    assert isinstance(body, dict) and body["contents"][0]["uri"] == uri
    assert isinstance(prompt, dict) and prompt["messages"]
    assert refused.value.code is ErrorCode.POLICY_RATE_LIMITED


def test_undeclared_upstream_tools_are_high_risk_and_declared_ones_get_their_risk() -> None:
    import mcp_types as types

    config = UpstreamSettings(
        name="gh",
        url="https://example.invalid/mcp",
        risk=[
            UpstreamToolRisk(tools="get_*", operation="READ"),
            UpstreamToolRisk(
                tools="create_issue", operation="WRITE", compensation="gh.close_issue"
            ),
        ],
    )
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    specs = {
        name: spec_for_tool(config, types.Tool(name=name, input_schema=schema), None)
        for name in ("get_issue", "create_issue", "delete_repo", "9lives/x")
    }
    assert specs["get_issue"].effective_risk.value == "LOW"
    assert specs["create_issue"].compensation.capability_id == "gh.close_issue"
    assert specs["delete_repo"].effective_risk.value == "HIGH"
    assert specs["delete_repo"].risk is None
    assert specs["9lives/x"].id == "gh._9lives_x"
    assert specs["get_issue"].input_schema == schema


def test_a_policy_reload_that_changes_a_callers_list_sends_tools_list_changed(
    tmp_path: Path,
) -> None:
    server = _server(tmp_path, McpIdentity(principal="agent"), "permitted")
    policy_file = tmp_path / "lab" / "policies" / "default.yaml"

    async def main() -> tuple[set[str], set[str], bool]:
        changed = anyio.Event()

        async def on_message(message: object) -> None:
            if isinstance(getattr(message, "root", message), types.ToolListChangedNotification):
                changed.set()

        async with Client(server.server, mode="legacy", message_handler=on_message) as client:
            assert client.server_capabilities.tools is not None
            announced = bool(client.server_capabilities.tools.list_changed)
            before = {tool.name for tool in (await client.list_tools()).tools}
            policy_file.write_text(
                POLICY.replace(
                    'when: {capability: "lab.wipe"}', 'when: {capability: "lab.nothing"}'
                )
            )
            await anyio.to_thread.run_sync(lambda: server.runtime.policy.reload(actor="admin"))
            with anyio.fail_after(10):
                await changed.wait()
            after = {tool.name for tool in (await client.list_tools()).tools}
            return before, after, announced

    before, after, announced = anyio.run(main)
    assert announced
    assert "lab.wipe" not in before
    assert "lab.wipe" in after
