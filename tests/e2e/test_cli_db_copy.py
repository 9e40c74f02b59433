"""``aifr db copy --to URL``: a project's whole state moved to another database, as a user does.

A project made on SQLite (a finished run, a run waiting for an approval, a queued run, a
grant, an API token, imported findings, a signed checkpoint) is copied to a fresh
PostgreSQL schema and goes on there: the chain verifies with its checkpoint, the queued
run is finished by a worker on the new database, the approval is decided there. And
back: a PostgreSQL project copied into a new SQLite file. Every refusal leaves the target
as it was.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from cli_kit import init_project, pg_rows, run_cli
from test_cli_prune import DROP, NOTE, _records

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "findings" / "nuclei"
POLICY = """version: 1
roles:
  admin:
    principals: [erin]
rules:
  - id: files
    when: {capability: 'io.fs.write_file'}
    decision: ALLOW
  - id: deletes-need-ops
    when: {capability: 'io.fs.delete'}
    decision: REQUIRE_APPROVAL
    approvers: [admin]
approvals:
  - risk: HIGH
    roles: [admin]
"""


@pytest.fixture
def project(tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]) -> Path:
    files = {
        "policies/default.yaml": POLICY,
        "workflows/note.yaml": NOTE,
        "workflows/drop.yaml": DROP,
    }
    init_project(aifr_bin, tmp_path / "proj", clean_env, files)
    (tmp_path / "proj" / "notes").mkdir()
    return tmp_path / "proj"


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def _json(aifr_bin: str, project: Path, env: dict[str, str], *args: str) -> object:
    return json.loads(_ok(run_cli(aifr_bin, project, env, *args, "--json")))


def _fill(aifr_bin: str, project: Path, env: dict[str, str]) -> dict[str, str]:
    """Give the project state of every kind; returns the runs' ids by role."""
    cli = lambda *args: run_cli(aifr_bin, project, env, *args)  # noqa: E731
    done = json.loads(_ok(cli("run", "note", "-i", "name=a", "--json")))
    waiting = cli("run", "drop", "--json")
    assert waiting.returncode == 4, waiting.stderr  # waiting for an approval
    queued = json.loads(_ok(cli("run", "note", "-i", "name=b", "--queue", "--json")))
    _ok(cli("tokens", "create", "--principal", "bob", "--label", "moved"))
    grant = ("--as", "erin", "--principal", "alice", "--capability", "io.fs.delete")
    _ok(cli("grants", "issue", *grant))
    (project / "scan.jsonl").write_text((FIXTURE / "nuclei-v2.1-gen-a.jsonl").read_text())
    _ok(cli("findings", "import", str(project / "scan.jsonl"), "--project", "acme"))
    _ok(cli("audit", "checkpoint"))
    return {"done": done["id"], "waiting": json.loads(waiting.stdout)["id"], "queued": queued["id"]}


@pytest.mark.pg
def test_a_sqlite_project_moves_to_postgresql_and_goes_on_there(
    project: Path, aifr_bin: str, clean_env: dict[str, str], pg_url: str
) -> None:
    runs = _fill(aifr_bin, project, clean_env)
    before = _records(aifr_bin, project, clean_env)
    on_pg = {**clean_env, "AIFR_DATABASE_URL": pg_url}

    planned = _json(aifr_bin, project, clean_env, "db", "copy", "--to", pg_url, "--dry-run")
    assert isinstance(planned, dict) and planned["dry_run"] is True
    assert pg_rows(pg_url, "SELECT count(*) FROM wf_runs") == [(0,)]  # nothing written
    copied = _json(aifr_bin, project, clean_env, "db", "copy", "--to", pg_url, "--as", "ops")

    assert isinstance(copied, dict)
    assert copied["rows"] == planned["rows"]
    assert copied["rows"]["wf_runs"] == 3 and copied["rows"]["audit_records"] == len(before)
    assert copied["rows"]["findings"] > 0 and copied["rows"]["grants"] == 1
    assert copied["rows"]["tokens"] == 1 and copied["rows"]["audit_checkpoints"] == 1
    assert copied["audit_head"] == {"seq": before[-1]["seq"], "hash": before[-1]["hash"]}
    # the copied chain is the source's, record for record, then one db.copied record
    after = _records(aifr_bin, project, on_pg)
    assert after[:-1] == before
    assert after[-1]["kind"] == "db.copied" and after[-1]["principal"] == "ops"
    source_last = _records(aifr_bin, project, clean_env)[-1]
    assert source_last["kind"] == "db.copied" and source_last["details"] == after[-1]["details"]
    verified = run_cli(aifr_bin, project, on_pg, "audit", "verify")
    assert verified.returncode == 0 and "checkpoint" in verified.stdout, verified.stdout

    # the new database is the project's now: its state is all there and work goes on
    states = {r["id"]: r["state"] for r in _json(aifr_bin, project, on_pg, "runs", "list")}  # type: ignore[union-attr]
    assert states == {
        runs["done"]: "completed",
        runs["waiting"]: "waiting_approval",
        runs["queued"]: "pending",
    }
    assert [t["principal"] for t in _json(aifr_bin, project, on_pg, "tokens", "list")] == ["bob"]  # type: ignore[union-attr,index]
    assert [g["principal"] for g in _json(aifr_bin, project, on_pg, "grants", "list")] == ["alice"]  # type: ignore[union-attr,index]
    listed = _json(aifr_bin, project, on_pg, "findings", "list", "--project", "acme")
    assert isinstance(listed, dict) and len(listed["findings"]) == copied["rows"]["findings"]
    _ok(run_cli(aifr_bin, project, on_pg, "worker", "--once"))
    [approval] = _json(aifr_bin, project, on_pg, "approvals", "list")  # type: ignore[misc]
    _ok(run_cli(aifr_bin, project, on_pg, "approvals", "approve", approval["id"], "--as", "erin"))
    _ok(run_cli(aifr_bin, project, on_pg, "worker", "--once"))
    states = {r["id"]: r["state"] for r in _json(aifr_bin, project, on_pg, "runs", "list")}  # type: ignore[union-attr]
    assert set(states.values()) == {"completed"}
    assert (project / "notes" / "b.txt").read_text() == "b"
    assert not (project / "notes" / "a.txt").exists()  # the approved delete ran once, there
    assert run_cli(aifr_bin, project, on_pg, "audit", "verify").returncode == 0


@pytest.mark.pg
def test_a_postgresql_project_is_copied_into_a_new_sqlite_file(
    project: Path, aifr_bin: str, clean_env: dict[str, str], pg_url: str
) -> None:
    on_pg = {**clean_env, "AIFR_DATABASE_URL": pg_url}
    runs = _fill(aifr_bin, project, on_pg)
    before = _records(aifr_bin, project, on_pg)
    target = project / "moved" / "state.db"

    copied = _json(aifr_bin, project, on_pg, "db", "copy", "--to", f"sqlite:///{target}")

    on_file = {**clean_env, "AIFR_DATABASE_URL": f"sqlite:///{target}"}
    assert isinstance(copied, dict) and copied["rows"]["audit_records"] == len(before)
    assert _records(aifr_bin, project, on_file)[:-1] == before
    assert run_cli(aifr_bin, project, on_file, "audit", "verify").returncode == 0
    states = {r["id"]: r["state"] for r in _json(aifr_bin, project, on_file, "runs", "list")}  # type: ignore[union-attr]
    assert states[runs["queued"]] == "pending"
    _ok(run_cli(aifr_bin, project, on_file, "worker", "--once"))
    assert (project / "notes" / "b.txt").read_text() == "b"
    with sqlite3.connect(target) as raw:
        assert raw.execute("SELECT count(*) FROM tokens").fetchone() == (1,)


@pytest.mark.pg
def test_a_target_holding_state_is_refused_and_left_as_it_was(
    project: Path, aifr_bin: str, clean_env: dict[str, str], pg_url: str
) -> None:
    """The first copy's URL carries a password: it is shown and recorded as ``***`` only."""
    secret_url = pg_url.replace("postgresql://postgres@", "postgresql://postgres:hunter2@", 1)
    assert "hunter2" in secret_url  # the server trusts local connections: any password does
    _ok(run_cli(aifr_bin, project, clean_env, "run", "note", "-i", "name=a"))
    first = run_cli(aifr_bin, project, clean_env, "db", "copy", "--to", secret_url)
    assert first.returncode == 0, first.stderr
    assert "hunter2" not in first.stdout + first.stderr
    exported = _ok(run_cli(aifr_bin, project, clean_env, "audit", "export"))
    assert "hunter2" not in exported and "postgres:***@" in exported
    held = pg_rows(pg_url, "SELECT count(*) FROM aifr_audit_records")
    _ok(run_cli(aifr_bin, project, clean_env, "run", "note", "-i", "name=b"))

    again = run_cli(aifr_bin, project, clean_env, "db", "copy", "--to", pg_url)
    planned = run_cli(aifr_bin, project, clean_env, "db", "copy", "--to", pg_url, "--dry-run")

    for refused in (again, planned):
        assert refused.returncode == 2
        assert "storage.not_empty" in refused.stderr and "audit_records" in refused.stderr
    assert pg_rows(pg_url, "SELECT count(*) FROM aifr_audit_records") == held


def test_the_project_s_own_database_is_refused(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    own = f"sqlite:///{project / '.aifr' / 'aifr.db'}"
    refused = run_cli(aifr_bin, project, clean_env, "db", "copy", "--to", own)
    assert refused.returncode == 2 and "config.invalid" in refused.stderr
    assert "own database" in refused.stderr


def test_a_broken_source_chain_is_not_copied(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    _ok(run_cli(aifr_bin, project, clean_env, "run", "note", "-i", "name=a"))
    with sqlite3.connect(project / ".aifr" / "aifr.db") as raw:
        raw.execute("UPDATE audit_records SET principal = 'mallory' WHERE seq = 1")
    target = project / "copy.db"

    refused = run_cli(aifr_bin, project, clean_env, "db", "copy", "--to", f"sqlite:///{target}")

    assert refused.returncode != 0 and "audit.chain_broken" in refused.stderr
    assert not target.exists()  # refused before the target was opened


def test_a_live_worker_on_the_source_is_refused(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    worker = subprocess.Popen(
        [aifr_bin, "worker", "-p", str(project), "--poll", "0.2"],
        env=clean_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not _json(aifr_bin, project, clean_env, "workers") and time.monotonic() < deadline:
            time.sleep(0.2)
        refused = run_cli(aifr_bin, project, clean_env, "db", "copy", "--to", "sqlite:///copy.db")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    assert refused.returncode != 0 and "storage.in_use" in refused.stderr
    assert "stop them" in refused.stderr
    assert not (project / "copy.db").exists()  # refused before the target was opened
    copied = run_cli(aifr_bin, project, clean_env, "db", "copy", "--to", "sqlite:///copy.db")
    assert copied.returncode == 0, copied.stderr  # once the worker stopped
