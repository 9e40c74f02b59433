"""Findings through MCP with the official client: the ``findings.list`` tool and ``aifr://findings/{project}``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError
from mcp_harness import build_target

SAMPLE = (
    Path(__file__).resolve().parents[3]
    / ".."
    / "shared"
    / "samples"
    / "scanners"
    / "nuclei"
    / "nuclei-v3.jsonl"
)


def _env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if not k.startswith("AIFR_") or k == "AIFR_TEST_PG_DSN"
    }


def _import(aifr_bin: str, project: Path, env: dict[str, str]) -> int:
    # findings.import reads files inside the project's [fs] roots only
    (project / "nuclei.jsonl").write_bytes(SAMPLE.read_bytes())
    done = subprocess.run(
        [aifr_bin, "findings", "import", str(project / "nuclei.jsonl"), "--project", "acme",
         "--json", "-p", str(project)],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    imported: int = json.loads(done.stdout)["imported"]
    return imported


def test_an_agent_reads_findings_as_a_tool_and_as_a_resource(
    aifr_bin: str, tmp_path: Path, short_dir: Path
) -> None:
    env = _env()
    target = build_target("stdio", aifr_bin, tmp_path, env, short_dir)
    imported = _import(aifr_bin, target.project, env)

    async def main() -> tuple[Any, Any, list[str]]:
        with anyio.fail_after(60):
            async with target.client() as client:
                tool = await client.call_tool(
                    "findings.list", {"project": "acme", "severity": ["high", "critical"]}
                )
                templates = [
                    t.uri_template
                    for t in (await client.list_resource_templates()).resource_templates
                ]
                resource = await client.read_resource("aifr://findings/acme?severity=high,critical")
                return tool, resource, templates

    tool, resource, templates = anyio.run(main)
    assert "aifr://findings/{project}" in templates
    assert not tool.is_error
    page = json.loads(tool.content[0].text)
    assert 0 < len(page["findings"]) < imported
    assert {f["severity"] for f in page["findings"]} <= {"high", "critical"}
    body = json.loads(resource.contents[0].text)
    assert [f["id"] for f in body["findings"]] == [f["id"] for f in page["findings"]]


def test_a_policy_that_denies_findings_list_also_closes_the_resource(
    aifr_bin: str, tmp_path: Path, short_dir: Path
) -> None:
    env = _env()
    target = build_target("stdio", aifr_bin, tmp_path, env, short_dir)
    _import(aifr_bin, target.project, env)
    (target.project / "policies" / "00-findings.yaml").write_text(
        "version: 1\nrules:\n  - id: no-findings\n    when: {capability: findings.list}\n"
        "    decision: DENY\n    reason: findings are private\n"
    )

    async def main() -> MCPError:
        with anyio.fail_after(60):
            async with target.client() as client:
                try:
                    await client.read_resource("aifr://findings/acme")
                except MCPError as exc:
                    return exc
        pytest.fail("the denied read returned findings")

    refused = anyio.run(main)
    assert refused.data["error"]["code"] == "policy.denied"
    assert refused.data["error"]["details"]["rule_id"] == "no-findings"
