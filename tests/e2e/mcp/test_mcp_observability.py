"""``aifr mcp --transport http --metrics``: /metrics of a running server, and a caller's
W3C ``traceparent`` (in ``_meta`` or the HTTP header) continued by the invocation's span
and audit record."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_harness import McpTarget, ServerProcess, build_target, mint_token, run_aifr

TRACE_ID, CALLER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
HEADER_TRACE, HEADER_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


@pytest.fixture
def served(aifr_bin: str, tmp_path: Path) -> Iterator[McpTarget]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIFR_")}
    env["OTEL_TRACES_EXPORTER"] = "console"
    target = build_target("http", aifr_bin, tmp_path, env, tmp_path)
    target.token = mint_token(target, "agent", "--operator", "alice")
    argv = [aifr_bin, "mcp", "--transport", "http", "--port", "0", "--metrics"]
    server = ServerProcess([*argv, "-p", str(target.project)], target.project, env)
    target.servers.append(server)
    target.url = server.wait_for("serving on").rsplit("serving on", 1)[1].strip()
    yield target
    server.stop()


def _samples(text: str) -> dict[str, float]:
    pairs = (line.rpartition(" ") for line in text.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, _, value in pairs if name}


def test_metrics_count_mcp_calls_behind_the_token_and_traceparents_are_continued(
    served: McpTarget,
) -> None:
    async def main() -> None:
        async with served.client() as client:
            await client.call_tool(
                "shop.greet",
                {"name": "Ada"},
                meta={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"},  # type: ignore[typeddict-unknown-key]
            )
            await client.call_tool("shop.greet", {"name": "Ada", "times": 9})
        headers = {
            "Authorization": f"Bearer {served.token}",
            "traceparent": f"00-{HEADER_TRACE}-{HEADER_SPAN}-01",
        }
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            assert served.url is not None
            async with Client(streamable_http_client(served.url, http_client=http)) as client:
                await client.call_tool("shop.greet", {"name": "Bo"})

    anyio.run(main)
    assert served.url is not None
    metrics_url = served.url.removesuffix("/mcp") + "/metrics"
    assert httpx.get(metrics_url, timeout=10).status_code == 401
    scraped = httpx.get(
        metrics_url, headers={"Authorization": f"Bearer {served.token}"}, timeout=10
    )
    assert scraped.status_code == 200
    samples = _samples(scraped.text)
    ok = 'aifr_invocations_total{capability="shop.greet",decision="ALLOW",outcome="ok"}'
    assert samples[ok] == 2
    assert "aifr_workflow_runs" in scraped.text
    assert "agent" not in scraped.text  # principals are never labels
    tail = run_aifr(
        served.aifr_bin, "audit", "tail", "--json", "-p", str(served.project),
        cwd=served.project, env=served.env,
    )  # fmt: skip
    traced = [json.loads(line) for line in tail.stdout.splitlines()]
    assert TRACE_ID in {record["trace_id"] for record in traced}
    spans = [
        json.loads(line)
        for line in served.servers[0].stderr.splitlines()
        if line.startswith('{"name": "aifr.invoke"')
    ]
    for trace_id, caller in ((TRACE_ID, CALLER_SPAN), (HEADER_TRACE, HEADER_SPAN)):
        continued = [s for s in spans if s["context"]["trace_id"] == f"0x{trace_id}"]
        assert len(continued) == 1
        assert continued[0]["parent_id"] == f"0x{caller}"
