"""PydanticAI's own agent loop, driven by its deterministic ``TestModel``, with aifr in it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from pydantic_ai import Agent
from pydantic_ai.models.test import TestModel

from aifr.app import build_app
from aifr.config import init_project
from aifr.integrations.pydantic_ai import aifr_tools

CAPABILITIES = '''
from aifr import capability


@capability("lab.echo", operation="READ", risk="LOW")
def echo(text: str) -> dict[str, str]:
    """Echo text."""
    return {"echoed": text}


@capability("lab.launch", operation="EXECUTE", risk="HIGH")
def launch(target: str) -> dict[str, str]:
    """Launch something."""
    raise AssertionError("a launch waits for a human")


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
  - id: launch-needs-approval
    when: {capability: "lab.launch"}
    decision: REQUIRE_APPROVAL
    reason: launches need a human
    approvers: [approver]
  - id: allow-reads
    when: {operation: READ}
    decision: ALLOW
approvals:
  - risk: HIGH
    roles: [approver]
"""


def test_a_pydantic_ai_agent_reads_a_denial_and_a_pending_approval_as_tool_results(
    tmp_path: Path,
) -> None:
    project = tmp_path / "lab"
    init_project(project)
    (project / "pai_lab_caps.py").write_text(CAPABILITIES)
    (project / "policies" / "default.yaml").write_text(POLICY)
    config = project / "aifr.toml"
    config.write_text(
        config.read_text().replace(
            "capability_modules = []", 'capability_modules = ["pai_lab_caps"]'
        )
    )
    app = build_app(project, require_project=True)
    try:
        tools = aifr_tools(app.runtime, "agent", capabilities=["lab.*"])
        model = TestModel(call_tools=["lab_echo", "lab_wipe", "lab_launch"])
        # run() under asyncio.run, not run_sync: run_sync leaves its event loop open,
        # and the loop's sockets then warn in whichever test collects them.
        result = asyncio.run(Agent(model, tools=tools).run("do the lab things"))
        answers = json.loads(result.output)
        ledger = [
            (r.event.capability_id, r.event.decision)
            for r in app.ledger.records()
            if r.event.kind == "invocation"
        ]
    finally:
        app.close()
    assert answers["lab_echo"] == {"echoed": "a"}
    assert answers["lab_wipe"]["status"] == "denied"
    assert "wiping is off limits" in answers["lab_wipe"]["reason"]
    assert answers["lab_launch"]["status"] == "pending_approval"
    assert answers["lab_launch"]["approval_id"]
    assert sorted(ledger) == [
        ("lab.echo", "ALLOW"),
        ("lab.launch", "REQUIRE_APPROVAL"),
        ("lab.wipe", "DENY"),
    ]
