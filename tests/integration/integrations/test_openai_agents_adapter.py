"""The OpenAI Agents SDK's tool invocation path (``FunctionTool.on_invoke_tool``) with aifr in it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from agents import FunctionTool, function_tool
from agents.tool_context import ToolContext

from aifr.app import App, build_app
from aifr.capabilities import OperationType, RiskLevel
from aifr.config import init_project
from aifr.integrations.openai_agents import aifr_tools, govern_tool

CAPABILITIES = '''
from aifr import capability


@capability("lab.echo", operation="READ", risk="LOW")
def echo(text: str) -> dict[str, str]:
    """Echo text."""
    return {"echoed": text}


@capability("lab.wipe", operation="DELETE", risk="HIGH", compensation="lab.echo")
def wipe() -> None:
    """Wipe."""
    raise AssertionError("wiping is denied")
'''

POLICY = """\
version: 1
roles:
  approver:
    principals: [alice]
rules:
  - id: no-wipe
    when: {capability: "lab.wipe"}
    decision: DENY
    reason: wiping is off limits
  - id: refunds-need-a-human
    when: {capability: "agents.refund"}
    decision: REQUIRE_APPROVAL
    reason: refunds move money
    approvers: [approver]
  - id: allow-reads
    when: {operation: READ}
    decision: ALLOW
approvals:
  - risk: HIGH
    roles: [approver]
"""

REFUNDS: list[int] = []


@function_tool
def refund(order_id: int) -> str:
    """Refund an order.

    Args:
        order_id: The order.
    """
    REFUNDS.append(order_id)
    return f"refunded {order_id}"


def _app(tmp_path: Path) -> App:
    project = tmp_path / "lab"
    init_project(project)
    (project / "oa_lab_caps.py").write_text(CAPABILITIES)
    (project / "policies" / "default.yaml").write_text(POLICY)
    config = project / "aifr.toml"
    config.write_text(
        config.read_text().replace(
            "capability_modules = []", 'capability_modules = ["oa_lab_caps"]'
        )
    )
    return build_app(project, require_project=True)


def _invoke(tool: FunctionTool, arguments: str) -> Any:
    context = ToolContext(
        context=None, tool_name=tool.name, tool_call_id="call-1", tool_arguments=arguments
    )
    return json.loads(asyncio.run(tool.on_invoke_tool(context, arguments)))


def test_agents_sdk_function_tools_return_denials_and_approvals_as_readable_results(
    tmp_path: Path,
) -> None:
    app = _app(tmp_path)
    try:
        tools = {t.name: t for t in aifr_tools(app.runtime, "agent", capabilities=["lab.*"])}
        governed = govern_tool(
            refund, app.runtime, "agent", operation=OperationType.WRITE, risk=RiskLevel.HIGH
        )
        echoed = _invoke(tools["lab_echo"], '{"text": "hi"}')
        denied = _invoke(tools["lab_wipe"], "{}")
        garbled = _invoke(tools["lab_echo"], "not json")
        pending = _invoke(governed, '{"order_id": 7}')
    finally:
        app.close()
    assert echoed == {"echoed": "hi"}
    assert denied["status"] == "denied"
    assert "wiping is off limits" in denied["reason"]
    assert garbled["code"] == "input.invalid"
    assert governed.name == "agents_refund"
    assert pending["status"] == "pending_approval"
    assert pending["approval_id"]
    assert REFUNDS == []
