"""``aifr search`` as a user runs it: the real model, the encrypted index, policy per repository."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from cli_kit import run_cli
from mcp import Client, StdioServerParameters

from aifr.app import open_knowledge_index
from aifr.config import init_project, load_settings
from aifr.ingest import FileEntry
from aifr.ingest.chunk import ChunkPlanner, content_hash
from aifr.storage.sqlite.chunk_index import SqliteChunkIndex

pytestmark = pytest.mark.slow

KNOWLEDGE_POLICY = """\
version: 1
rules:
  - id: hr-private
    when:
      capability: knowledge.search
      inputs: {repo: {glob: "hr-*"}}
      roles: [hr]
    decision: ALLOW
  - id: hr-closed
    when:
      capability: knowledge.search
      inputs: {repo: {glob: "hr-*"}}
    decision: DENY
    reason: HR repositories are for the hr role
"""
FILES = {
    ("handbook", "deploy.md"): (
        "# Deploying the service\n\nBuild the container image, push it to the registry and\n"
        "roll it out to production one zone at a time.\n"
    ),
    ("handbook", "retry.py"): (
        "def backoff_delays(attempts):\n    return [2 ** n for n in range(attempts)]\n"
    ),
    ("hr-records", "salaries.md"): "# Salary bands\n\nEngineers: band 3 to band 7.\n",
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("search-project")
    init_project(root)
    (root / "policies" / "00-knowledge.yaml").write_text(KNOWLEDGE_POLICY)
    index, embedder = open_knowledge_index(load_settings(root), create=True)
    assert isinstance(index, SqliteChunkIndex)
    planner = ChunkPlanner()
    with index:
        for (repo, path), text in FILES.items():
            chunks = planner.plan(repo, path, text)
            index.replace_file(
                FileEntry(repo, path, content_hash(text)),
                chunks,
                embedder.embed([c.text for c in chunks]),
            )
    return root


def test_search_prints_path_lines_and_a_snippet_and_names_the_repository_kept_out(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    done = run_cli(aifr_bin, project, clean_env, "search", "how do we ship to production")
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("handbook:deploy.md:1-")
    assert "roll it out to production" in done.stdout
    assert "hr-records: not searched: DENY by rule hr-closed" in done.stdout
    assert "Salary" not in done.stdout
    assert "Loading weights" not in done.stderr
    assert "bm25s" not in done.stderr


def test_search_json_lists_hits_and_the_role_opens_the_hr_repository(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    done = run_cli(
        aifr_bin, project, clean_env, "search", "salary bands", "--role", "hr", "--k", "2", "--json"
    )
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)["output"]
    assert len(output["hits"]) == 2
    assert output["hits"][0]["path"] == "salaries.md"
    assert all(repo["searched"] for repo in output["repos"])


def test_a_missing_key_is_a_clear_error_and_a_wrong_one_is_refused(
    aifr_bin: str, project: Path, clean_env: dict[str, str], tmp_path: Path
) -> None:
    key_file = project / ".aifr" / "keys" / "index.key"
    saved = key_file.read_text()
    key_file.unlink()
    try:
        missing = run_cli(aifr_bin, project, clean_env, "search", "deploy", "--json")
        wrong = run_cli(
            aifr_bin,
            project,
            {**clean_env, "AIFR_INDEX_KEY": "A" * 43 + "="},
            "search",
            "deploy",
            "--json",
        )
    finally:
        key_file.write_text(saved)
    assert json.loads(missing.stdout)["error"]["code"] == "ingest.key_missing"
    assert json.loads(wrong.stdout)["error"]["code"] == "ingest.key_invalid"
    assert missing.returncode == wrong.returncode == 2


def test_asking_for_a_repository_that_is_not_indexed_says_which_are(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    done = run_cli(aifr_bin, project, clean_env, "search", "deploy", "--repo", "nope")
    assert done.returncode == 5
    assert "ingest.repo_not_found" in done.stderr
    assert "handbook" in done.stderr


def test_an_mcp_client_searches_through_the_same_governed_capability(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    params = StdioServerParameters(
        command=aifr_bin,
        args=["mcp", "--transport", "stdio", "-p", str(project)],
        env=clean_env,
        cwd=project,
    )

    async def main() -> dict[str, object]:
        with anyio.fail_after(120):
            async with Client(params) as client:
                tools = {tool.name for tool in (await client.list_tools()).tools}
                assert "knowledge.search" in tools
                result = await client.call_tool(
                    "knowledge.search", {"query": "exponential backoff delays", "k": 3}
                )
                assert not result.is_error, result
                assert result.structured_content is not None
                return result.structured_content

    output = anyio.run(main)
    hits = output["hits"]
    assert isinstance(hits, list)
    assert hits[0]["path"] == "retry.py"
    assert "Salary" not in json.dumps(output)
    repos = {r["repo"]: r for r in output["repos"]}  # type: ignore[attr-defined]
    assert repos["hr-records"]["searched"] is False
