"""``aifr runs prune`` and the worker's ``workflows.retain_finished_days``, on either backend.

Finished runs go with their steps, a run waiting for an approval stays however old, the
ledger records what went, and ``aifr audit verify`` still passes: the runs' own records
are never touched.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_kit import init_project, run_cli
from test_scaleout_workers import _rows, database_url  # noqa: F401  # the backend fixture

POLICY = """version: 1
rules:
  - id: files
    when: {capability: 'io.fs.write_file'}
    decision: ALLOW
  - id: deletes-need-ops
    when: {capability: 'io.fs.delete'}
    decision: REQUIRE_APPROVAL
"""
NOTE = """
name: note
inputs:
  name: {type: string}
steps:
  - id: write
    capability: io.fs.write_file
    inputs: {path: "notes/{{ inputs.name }}.txt", content: "{{ inputs.name }}"}
"""
DROP = """
name: drop
steps:
  - id: delete
    capability: io.fs.delete
    inputs: {path: "notes/a.txt"}
"""


@pytest.fixture
def project(tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]) -> Path:
    files = {
        "policies/default.yaml": POLICY,
        "workflows/note.yaml": NOTE,
        "workflows/drop.yaml": DROP,
    }
    init_project(aifr_bin, tmp_path, clean_env, files)
    (tmp_path / "notes").mkdir()
    return tmp_path


def _env(clean_env: dict[str, str], url: str | None) -> dict[str, str]:
    return {**clean_env, **({"AIFR_DATABASE_URL": url} if url else {})}


def _start(aifr_bin: str, project: Path, env: dict[str, str], *args: str) -> str:
    started = run_cli(aifr_bin, project, env, "run", *args, "--json")
    assert started.returncode in (0, 4), started.stderr  # 4: waiting for an approval
    return str(json.loads(started.stdout)["id"])


def _records(aifr_bin: str, project: Path, env: dict[str, str]) -> list[dict[str, object]]:
    exported = run_cli(aifr_bin, project, env, "audit", "export")
    assert exported.returncode == 0, exported.stderr
    return [json.loads(line) for line in exported.stdout.splitlines()]


def _pruned(aifr_bin: str, project: Path, env: dict[str, str]) -> list[dict[str, object]]:
    """The details of each ``workflow.runs_pruned`` record, read as a user does."""
    return [
        r["details"]  # type: ignore[misc]
        for r in _records(aifr_bin, project, env)
        if r["kind"] == "workflow.runs_pruned"
    ]


def test_runs_prune_deletes_finished_runs_and_keeps_one_waiting_for_approval(
    project: Path,
    aifr_bin: str,
    clean_env: dict[str, str],
    database_url: str | None,  # noqa: F811
) -> None:
    env = _env(clean_env, database_url)
    done = [_start(aifr_bin, project, env, "note", "-i", f"name={n}") for n in ("a", "b")]
    waiting = _start(aifr_bin, project, env, "drop")

    counted = run_cli(
        aifr_bin, project, env, "runs", "prune", "--older-than-days", "0", "--dry-run", "--json"
    )
    pruned = run_cli(
        aifr_bin, project, env, "runs", "prune", "--older-than-days", "0", "--as", "ops"
    )
    again = run_cli(aifr_bin, project, env, "runs", "prune", "--older-than-days", "0")
    shown = run_cli(aifr_bin, project, env, "runs", "show", done[0])
    verified = run_cli(aifr_bin, project, env, "audit", "verify")

    assert json.loads(counted.stdout)["runs"] == 2 and json.loads(counted.stdout)["dry_run"]
    assert pruned.returncode == 0, pruned.stderr
    assert "pruned 2 run(s)" in pruned.stdout
    assert "pruned 0 run(s)" in again.stdout
    assert _rows(database_url, project, "SELECT id, state FROM wf_runs") == [
        (waiting, "waiting_approval")
    ]
    assert _rows(database_url, project, "SELECT DISTINCT run_id FROM wf_steps") == [(waiting,)]
    assert shown.returncode != 0 and "workflow.run_not_found" in shown.stderr
    [record] = _pruned(aifr_bin, project, env)
    assert record["runs"] == sorted(done)
    kept = [r for r in _records(aifr_bin, project, env) if r["run_id"] == done[0]]
    assert len(kept) >= 2  # the run's own records stay in the chain
    assert verified.returncode == 0, verified.stderr


def test_a_state_that_can_still_change_is_refused_by_name(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    waiting = _start(aifr_bin, project, clean_env, "drop")

    refused = run_cli(
        aifr_bin, project, clean_env, "runs", "prune", "--older-than-days", "0",
        "--state", "waiting_approval",
    )  # fmt: skip

    assert refused.returncode != 0
    assert "workflow.bad_state" in refused.stderr and "waiting_approval" in refused.stderr
    assert _rows(None, project, "SELECT id FROM wf_runs") == [(waiting,)]


def test_a_worker_with_a_retention_rule_prunes_finished_runs_on_its_own(
    project: Path,
    aifr_bin: str,
    clean_env: dict[str, str],
    database_url: str | None,  # noqa: F811
) -> None:
    env = _env(clean_env, database_url)
    config = project / "aifr.toml"
    config.write_text(
        config.read_text() + "\n[workflows]\nretain_finished_days = 0.00001\n"
    )  # 0.86 s
    done = _start(aifr_bin, project, env, "note", "-i", "name=a")
    waiting = _start(aifr_bin, project, env, "drop")
    time.sleep(1.0)  # older than the rule

    log = project / "worker.log"
    with log.open("w") as sink:
        worker = subprocess.Popen(
            [aifr_bin, "worker", "--poll", "0.1", "-p", str(project)],
            stdout=subprocess.DEVNULL, stderr=sink, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _pruned(aifr_bin, project, env):
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the worker never pruned"
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)

    [record] = _pruned(aifr_bin, project, env)
    assert record["runs"] == [done]
    assert record["rule"] == "workflows.retain_finished_days=1e-05"
    assert str(record["worker"]).count(":") == 2  # host:pid:nonce
    assert _rows(database_url, project, "SELECT id FROM wf_runs") == [(waiting,)]
    assert run_cli(aifr_bin, project, env, "audit", "verify").returncode == 0
