"""``aifr ingest`` end to end: the real model, the encrypted index, the CLI a user runs.

The canary test plants a secret of every type in a workspace, ingests it, searches it
(``aifr search`` and ``knowledge.search`` over MCP with the official client), and reads the raw bytes of everything the project holds (index, state database,
keys), the logs at DEBUG and every command's output: no canary may appear anywhere.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from archive_kit import GOOD, zip_with
from canary_kit import leaked, plant

_TIMEOUT_S = 300  # the first command of a run loads torch and the model on a busy host


def _aifr(aifr_bin: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [aifr_bin, *args],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
        env={**env, "COLUMNS": "40"},
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]) -> Path:
    done = _aifr(aifr_bin, clean_env, "init", str(tmp_path / "proj"))
    assert done.returncode == 0, done.stderr
    return tmp_path / "proj"


def _mcp_search(
    aifr_bin: str, env: dict[str, str], project: Path, queries: list[str], errors: Path
) -> list[str]:
    """``knowledge.search`` through ``aifr mcp`` with the official client: every reply, and the server's log."""
    params = StdioServerParameters(
        command=aifr_bin, args=["mcp", "--transport", "stdio", "-p", str(project)], env=env
    )

    async def session() -> list[str]:
        with anyio.fail_after(_TIMEOUT_S), errors.open("w") as sink:
            async with Client(stdio_client(params, errlog=sink)) as client:
                replies = []
                for query in queries:
                    result = await client.call_tool("knowledge.search", {"query": query})
                    assert not result.is_error, result
                    replies.append(json.dumps(result.structured_content))
                    replies.extend(getattr(part, "text", "") for part in result.content)
                return replies

    replies = anyio.run(session)
    assert any("[REDACTED:" in reply for reply in replies)
    return [*replies, errors.read_text()]


def test_canary_secrets_reach_no_index_database_log_search_result_or_output(
    project: Path, tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    workspace = tmp_path / "ws"
    plant(workspace)
    env = {**clean_env, "AIFR_LOG_LEVEL": "DEBUG"}
    outputs: list[str] = []
    ingest = _aifr(aifr_bin, env, "ingest", str(workspace), "--repo", "app", "-p", str(project))
    outputs += [ingest.stdout, ingest.stderr]
    assert ingest.returncode == 0, ingest.stderr
    assert "secrets redacted: 8" in ingest.stdout
    queries = [
        "AWS access key id",
        "github token",
        "slack bot notify",
        "RSA private key server",
        "postgres connection admin",
        "database password",
        "auth sample session",
        "cache blob",
    ]
    for query in queries[::4]:  # each command loads the model: two here, all over MCP below
        found = _aifr(aifr_bin, env, "search", query, "--json", "-p", str(project))
        assert found.returncode == 0, found.stderr
        outputs += [found.stdout, found.stderr]
        assert json.loads(found.stdout)["output"]["hits"], query
    again = _aifr(
        aifr_bin, env, "ingest", str(workspace), "--repo", "app", "--json", "-p", str(project)
    )
    outputs += [again.stdout, again.stderr]
    assert json.loads(again.stdout)["unchanged"] == 7
    exported = _aifr(aifr_bin, env, "audit", "export", "-p", str(project))
    outputs += [exported.stdout, exported.stderr]
    records = [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]
    first_ingest = next(r for r in records if r["kind"] == "ingest.completed")
    assert {"type": "private_key", "count": 1} in first_ingest["details"]["redactions"]
    assert first_ingest["details"]["added"] == 7
    stored = [p for p in (project / ".aifr").rglob("*") if p.is_file()]
    assert any(p.name == "index.db" for p in stored) and any(p.name == "aifr.db" for p in stored)
    assert leaked("\n".join(outputs)) == []
    for path in stored:
        assert leaked(path.read_bytes()) == [], path
    assert "[REDACTED:private_key]" in "\n".join(outputs)  # the placeholder, not the key


def test_reingest_reports_changes_and_removals_in_text_and_json(
    project: Path, tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    for i in range(3):
        (workspace / f"m{i}.py").write_text(f"def f{i}():\n    return {i}\n")
    zip_with(workspace / "vendor.zip", {"lib.py": GOOD.encode(), "../slip.py": b"x = 1\n"})
    first = _aifr(
        aifr_bin, clean_env, "ingest", str(workspace), "--repo", "app", "-p", str(project)
    )
    assert first.returncode == 0, first.stderr
    assert "added 5, changed 0, removed 0" in " ".join(first.stdout.split())
    assert "vendor.zip!/../slip.py" in first.stdout and "archive_unsafe_path" in first.stdout
    assert "ingesting" not in first.stderr and "━" not in first.stderr  # no bar when piped
    (workspace / "m0.py").write_text("def f0():\n    return 'new'\n")
    (workspace / "m1.py").unlink()
    second = _aifr(
        aifr_bin, clean_env, "ingest", str(workspace), "--repo", "app", "--json", "-p", str(project)
    )
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert {k: report[k] for k in ("added", "changed", "removed", "unchanged")} == {
        "added": 0,
        "changed": 1,
        "removed": 1,
        "unchanged": 3,
    }
    assert report["chunks_embedded"] == 1


def test_ingest_of_a_missing_folder_is_a_clear_error(
    project: Path, tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    done = _aifr(
        aifr_bin, clean_env, "ingest", str(tmp_path / "nope"), "--repo", "app", "-p", str(project)
    )
    assert done.returncode == 1
    assert "ingest.failed" in done.stderr and "nope" in done.stderr.replace("\n", "")


def test_watch_ingests_again_after_a_change_and_stops_on_sigterm(
    project: Path, tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "a.py").write_text("def a():\n    return 1\n")
    (project / "aifr.toml").write_text(
        (project / "aifr.toml").read_text() + "\n[ingest]\ndebounce_ms = 200\n"
    )
    proc = subprocess.Popen(
        [
            aifr_bin,
            "ingest",
            str(workspace),
            "--repo",
            "app",
            "--watch",
            "--json",
            "-p",
            str(project),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**clean_env, "COLUMNS": "40"},
    )
    assert proc.stdout is not None
    killer = threading.Timer(_TIMEOUT_S, proc.kill)  # a bound on every wait below
    killer.start()
    seen = threading.Event()

    def keep_writing() -> None:  # until the watcher, which starts after the first report, sees it
        attempt = 0
        while not seen.wait(0.3):
            attempt += 1
            (workspace / "b.py").write_text(f"def b():\n    return {attempt}\n")

    writer = threading.Thread(target=keep_writing, daemon=True)
    try:
        first = json.loads(proc.stdout.readline())
        assert first["added"] == 1
        writer.start()
        report = json.loads(proc.stdout.readline())
        seen.set()
        assert (report["added"], report["unchanged"], report["removed"]) == (1, 1, 0)
        # Each run saves the sealed graph and BM25 index at once, not only at exit, so
        # another process opens the new state without rebuilding it.
        conn = sqlite3.connect(project / ".aifr" / "index" / "index.db")
        try:
            current = conn.execute("SELECT generation FROM index_repos").fetchone()[0]
            for table in ("index_graphs", "index_keywords"):
                saved = conn.execute(f"SELECT generation FROM {table}").fetchone()  # noqa: S608
                assert saved == (current,), table
        finally:
            conn.close()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(_TIMEOUT_S) == 0
    finally:
        seen.set()
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()


def test_a_progress_bar_shows_on_a_terminal(
    project: Path, tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    for i in range(20):
        (workspace / f"m{i}.py").write_text(f"def f{i}():\n    return {i}\n")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [aifr_bin, "ingest", str(workspace), "--repo", "app", "-p", str(project)],
        stdout=subprocess.PIPE,
        stderr=follower,
        env={**clean_env, "COLUMNS": "80", "TERM": "xterm"},
    )
    os.close(follower)
    seen = bytearray()

    def drain() -> None:
        while True:
            try:
                block = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not block:
                return
            seen.extend(block)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
        os.close(leader)
    assert proc.returncode == 0
    assert b"ingesting" in seen and b"20/20" in seen
    assert b"added 20" in out and b"ingesting" not in out
