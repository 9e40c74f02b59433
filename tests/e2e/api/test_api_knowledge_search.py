"""``GET /v1/knowledge/search`` over an index ``aifr ingest`` built: hits from the ingested repositories.

Loads the real embedding model (the ``embed`` extra): slow the first time on a busy host.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from api_harness import make_project, mint, run_aifr, start_server

pytest.importorskip("sentence_transformers", reason="the embed extra is not installed")


def test_search_over_http_finds_ingested_code_through_the_governed_call(
    aifr_bin: str, tmp_path: Path, api_env: dict[str, str]
) -> None:
    project = make_project(aifr_bin, tmp_path, api_env)
    for repo, text in (
        ("shop", "def refund_order(order_id):\n    return issue_refund(order_id)\n"),
        ("secret", "def refund_backdoor(order_id):\n    return skip_checks(order_id)\n"),
    ):
        folder = tmp_path / "repos" / repo
        folder.mkdir(parents=True)
        (folder / "refunds.py").write_text(text)
        done = run_aifr(
            aifr_bin,
            "ingest",
            str(folder),
            "--repo",
            repo,
            "-p",
            str(project),
            cwd=project,
            env=api_env,
        )
        assert done.returncode == 0, done.stderr
    server = start_server(aifr_bin, project, api_env)
    server.tokens = {"agent": mint(aifr_bin, project, api_env, "agent")}
    try:
        headers = {"Authorization": f"Bearer {server.tokens['agent']}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=300) as agent:
            found = agent.get("/v1/knowledge/search", params={"q": "refund an order", "k": 5})
            audit = agent.get("/v1/audit", params={"limit": 1000})
        assert found.status_code == 200, found.text
        body = found.json()
        assert body["hits"], body
        assert {h["repo"] for h in body["hits"]} <= {"shop", "secret"}
        assert body["hits"][0]["path"] == "refunds.py"
        assert "refund" in body["hits"][0]["snippet"]
        assert {r["repo"] for r in body["repos"]} >= {"shop"}
        assert audit.status_code == 200  # reads are allowed to the agent in this policy
        searched = [r for r in audit.json() if r.get("capability_id") == "knowledge.search"]
        assert [(r["principal"], r["outcome"]) for r in searched] == [("agent", "ok")]
    finally:
        server.stop()
        print(server.stderr)
