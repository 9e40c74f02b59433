"""``aifr doctor`` and ``aifr status`` run as a user runs them, on an ``aifr init`` project."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest
from tests.e2e.cli_kit import run_cli


@pytest.fixture
def project(tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]) -> Path:
    root = tmp_path / "proj"
    done = subprocess.run(
        [aifr_bin, "init", str(root)], capture_output=True, text=True, env=clean_env, check=False
    )
    assert done.returncode == 0, done.stderr
    (root / "note.txt").write_text("hello\n", encoding="utf-8")
    return root


def _checks(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    return {c["name"]: c for c in json.loads(done.stdout)["checks"]}


def test_doctor_passes_on_a_fresh_project_and_lists_every_check(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    done = run_cli(aifr_bin, project, clean_env, "doctor", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    checks = _checks(done)
    assert set(checks) == {
        "python and packages",
        "configuration",
        "state database",
        "policy files",
        "workflow files",
        "audit chain",
        "audit sink",
        "plugins",
        "TLS files",
        "process sandbox",
        "tracing",
        "embedding model",
        "workers",
    }
    assert all(c["ok"] for c in checks.values())
    assert "Python 3." in str(checks["python and packages"]["detail"])
    table = run_cli(aifr_bin, project, clean_env, "doctor")
    assert table.returncode == 0
    assert "all checks passed" in table.stdout


def test_a_broken_policy_file_fails_doctor_naming_the_file_and_the_fix(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    (project / "policies" / "broken.yaml").write_text(
        "version: 1\nrules:\n  - id: x\n    decision: MAYBE\n", encoding="utf-8"
    )
    done = run_cli(aifr_bin, project, clean_env, "doctor")
    assert done.returncode == 1
    assert "FAIL" in done.stdout
    assert "broken.yaml" in done.stdout
    assert "aifr policy check" in done.stdout
    policy = _checks(run_cli(aifr_bin, project, clean_env, "doctor", "--json"))["policy files"]
    assert policy["ok"] is False
    assert "broken.yaml" in str(policy["detail"])


def test_a_tampered_ledger_fails_doctor_with_the_record_and_the_fix(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    for _ in range(3):
        call = run_cli(aifr_bin, project, clean_env, "call", "io.fs.read_file", "path=note.txt")
        assert call.returncode == 0, call.stderr
    with sqlite3.connect(project / ".aifr" / "aifr.db") as conn:
        conn.execute("UPDATE audit_records SET principal = 'mallory' WHERE seq = 2")
    done = run_cli(aifr_bin, project, clean_env, "doctor")
    assert done.returncode == 1
    assert "broken at record 2" in done.stdout
    assert "restore from that copy" in done.stdout
    checks = _checks(run_cli(aifr_bin, project, clean_env, "doctor", "--json"))
    assert f"1 of {len(checks)} checks failed" in done.stdout
    audit = checks["audit chain"]
    assert audit["ok"] is False
    assert audit["fix"]


def test_doctor_outside_a_project_fails_and_says_to_run_init(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    done = run_cli(aifr_bin, tmp_path / "nowhere", clean_env, "doctor", "--json")
    assert done.returncode == 1
    config = _checks(done)["configuration"]
    assert config["ok"] is False
    assert "aifr init" in str(config["fix"])


def test_an_unreachable_audit_sink_fails_doctor(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (project / "aifr.toml").open("a", encoding="utf-8") as config:
        config.write(f'\n[audit]\nsink_url = "http://user:hunter2@127.0.0.1:{port}/ingest"\n')
    done = run_cli(aifr_bin, project, clean_env, "doctor", "--json")
    assert done.returncode == 1
    sink = _checks(done)["audit sink"]
    assert sink["ok"] is False
    assert f"127.0.0.1:{port}" in str(sink["detail"])
    assert "hunter2" not in done.stdout


def test_status_shows_pending_approvals_audit_head_and_last_verify_and_checkpoint(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    run_cli(aifr_bin, project, clean_env, "call", "io.fs.read_file", "path=note.txt")
    asked = run_cli(aifr_bin, project, clean_env, "call", "io.fs.delete", "path=note.txt")
    assert "REQUIRE_APPROVAL" in asked.stdout
    before = json.loads(run_cli(aifr_bin, project, clean_env, "status", "--json").stdout)
    assert before["pending_approvals"] == 1
    assert before["audit"]["last_verify"] is None
    assert before["audit"]["last_checkpoint"] is None
    assert before["runs"] == {}
    assert run_cli(aifr_bin, project, clean_env, "audit", "verify").returncode == 0
    assert run_cli(aifr_bin, project, clean_env, "audit", "checkpoint").returncode == 0
    after = json.loads(run_cli(aifr_bin, project, clean_env, "status", "--json").stdout)
    head = after["audit"]["head_seq"]
    assert head >= 2
    assert after["audit"]["last_verify"]["ok"] is True
    assert after["audit"]["last_checkpoint"]["seq"] == head
    screen = run_cli(aifr_bin, project, clean_env, "status")
    assert screen.returncode == 0
    assert "pending approvals" in screen.stdout
    assert f"record {head}" in screen.stdout


def test_runs_queued_with_no_live_worker_fail_doctor_until_a_worker_runs(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    (project / "workflows" / "read.yaml").write_text(
        "name: read\nsteps:\n  - id: r\n    capability: io.fs.read_file\n"
        "    inputs: {path: note.txt}\n"
    )
    queued = run_cli(aifr_bin, project, clean_env, "run", "read", "--queue")
    assert queued.returncode == 0, queued.stderr

    stuck = run_cli(aifr_bin, project, clean_env, "doctor", "--json")
    worker = subprocess.Popen(
        [aifr_bin, "worker", "--poll", "0.1", "-p", str(project)],
        env=clean_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert worker.stdout is not None and worker.stdout.readline()
        served = run_cli(aifr_bin, project, clean_env, "doctor", "--json")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        if worker.stdout is not None:
            worker.stdout.close()

    assert stuck.returncode == 1
    workers = _checks(stuck)["workers"]
    assert workers["ok"] is False
    assert "1 run(s) wait for a worker and none is live" in str(workers["detail"])
    assert "aifr worker" in str(workers["fix"])
    assert _checks(served)["workers"]["ok"] is True
    assert "1 live worker(s)" in str(_checks(served)["workers"]["detail"])


def test_doctor_leaves_an_older_workflows_schema_for_its_first_use(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    assert run_cli(aifr_bin, project, clean_env, "runs", "list").returncode == 0
    database = project / ".aifr" / "aifr.db"
    with sqlite3.connect(database) as conn:  # as aifr before the worker registry left it
        conn.execute("DROP TABLE wf_workers")
        conn.execute("UPDATE schema_versions SET version = 4 WHERE component = 'workflows'")
    conn.close()

    done = run_cli(aifr_bin, project, clean_env, "doctor", "--json")

    assert done.returncode == 0, done.stdout
    assert "upgrades on first use" in str(_checks(done)["workers"]["detail"])
    with sqlite3.connect(database) as conn:
        version = conn.execute(
            "SELECT version FROM schema_versions WHERE component = 'workflows'"
        ).fetchone()
    conn.close()
    assert version == (4,)


def test_an_unknown_trace_exporter_fails_doctor_with_the_values_it_takes(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    env = {**clean_env, "OTEL_TRACES_EXPORTER": "carrier-pigeon"}
    done = run_cli(aifr_bin, project, env, "doctor", "--json")
    assert done.returncode == 1
    tracing = _checks(done)["tracing"]
    assert tracing["ok"] is False
    assert "console, otlp or none" in str(tracing["fix"])
    console = run_cli(aifr_bin, project, {**clean_env, "OTEL_TRACES_EXPORTER": "console"}, "doctor")
    assert console.returncode == 0, console.stdout


def test_an_unreachable_postgresql_database_fails_doctor_without_showing_its_password(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://aifr:pg-s3cret@127.0.0.1:{port}/aifr"
    done = run_cli(aifr_bin, project, {**clean_env, "AIFR_DATABASE_URL": url}, "doctor", "--json")
    assert done.returncode == 1
    database = _checks(done)["state database"]
    assert database["ok"] is False
    assert "pg extra" in str(database["fix"])
    assert "pg-s3cret" not in done.stdout
    # The workers row does not wait out a pool's reconnect timeout for the same answer.
    assert _checks(done)["workers"]["detail"] == "skipped: the state database failed its check"


def test_a_reachable_postgresql_database_passes_doctor(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    dsn = os.environ.get("AIFR_TEST_PG_DSN")
    if not dsn:
        pytest.skip("AIFR_TEST_PG_DSN is not set: this check needs a PostgreSQL server")
    import psycopg

    schema = f"aifr_doctor_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        url = f"{dsn}{'&' if '?' in dsn else '?'}options=-csearch_path%3D{schema}"
        env = {**clean_env, "AIFR_DATABASE_URL": url}
        done = run_cli(aifr_bin, project, env, "doctor", "--json")
        checks = _checks(done)
        assert checks["state database"]["ok"] is True, checks["state database"]
        assert checks["audit chain"]["ok"] is True, checks["audit chain"]
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
