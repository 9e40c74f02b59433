"""LangChain's tool-invocation path, driven by its fake chat model, with aifr in it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, tool

from aifr.app import App, build_app
from aifr.capabilities import OperationType, RiskLevel
from aifr.config import init_project
from aifr.integrations.langchain import aifr_tools, govern_tool

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
    when: {capability: "langchain.refund"}
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


@tool
def refund(order_id: int) -> str:
    """Refund an order."""
    REFUNDS.append(order_id)
    return f"refunded {order_id}"


def _app(tmp_path: Path) -> App:
    project = tmp_path / "lab"
    init_project(project)
    (project / "lc_lab_caps.py").write_text(CAPABILITIES)
    (project / "policies" / "default.yaml").write_text(POLICY)
    config = project / "aifr.toml"
    config.write_text(
        config.read_text().replace(
            "capability_modules = []", 'capability_modules = ["lc_lab_caps"]'
        )
    )
    return build_app(project, require_project=True)


async def _agent_loop(tools: list[BaseTool], script: list[AIMessage]) -> list[BaseMessage]:
    """The loop an agent runs: ask the model, run the tool calls it makes, repeat."""
    model = GenericFakeChatModel(messages=iter(script))
    by_name = {t.name: t for t in tools}
    history: list[BaseMessage] = [HumanMessage("go")]
    while True:
        reply = await model.ainvoke(history)
        assert isinstance(reply, AIMessage)
        history.append(reply)
        if not reply.tool_calls:
            return history
        for call in reply.tool_calls:
            history.append(await by_name[call["name"]].ainvoke({**call, "type": "tool_call"}))


def _results(history: list[BaseMessage]) -> dict[str, Any]:
    return {str(m.name): json.loads(str(m.content)) for m in history if isinstance(m, ToolMessage)}


def test_a_langchain_agent_loop_reads_aifr_denials_and_approvals_as_tool_results(
    tmp_path: Path,
) -> None:
    app = _app(tmp_path)
    try:
        tools: list[BaseTool] = [*aifr_tools(app.runtime, "agent", capabilities=["lab.*"])]
        tools.append(
            govern_tool(
                refund, app.runtime, "agent", operation=OperationType.WRITE, risk=RiskLevel.HIGH
            )
        )
        script = [
            AIMessage(
                "",
                tool_calls=[
                    {"name": "lab_echo", "args": {"text": "hi"}, "id": "1"},
                    {"name": "lab_wipe", "args": {}, "id": "2"},
                    {"name": "langchain_refund", "args": {"order_id": 7}, "id": "3"},
                ],
            ),
            AIMessage("done"),
        ]
        history = asyncio.run(_agent_loop(tools, script))
    finally:
        app.close()
    results = _results(history)
    assert history[-1].content == "done"  # the loop went on after the denial
    assert results["lab_echo"] == {"echoed": "hi"}
    assert results["lab_wipe"]["status"] == "denied"
    assert "wiping is off limits" in results["lab_wipe"]["reason"]
    assert results["langchain_refund"]["status"] == "pending_approval"
    assert REFUNDS == []  # the wrapped tool did not run
