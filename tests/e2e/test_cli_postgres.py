"""The CLI on a PostgreSQL state database (``AIFR_DATABASE_URL=postgresql://...``)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_kit import pg_rows, run_cli

from aifr.app import build_app
from aifr.errors import ConfigError, ErrorCode

pytestmark = pytest.mark.pg


def test_the_demo_runs_on_postgresql_and_keeps_its_runs_and_ledger_there(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str], pg_url: str
) -> None:
    env = {**clean_env, "AIFR_DATABASE_URL": pg_url, "COLUMNS": "40"}
    demo = subprocess.run(
        [aifr_bin, "demo", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )

    assert demo.returncode == 0, demo.stderr
    assert "byte-identical" in demo.stdout
    assert "aifr audit verify: ok" in demo.stdout
    assert not (tmp_path / "demo" / ".aifr" / "aifr.db").exists()
    states = {row[0] for row in pg_rows(pg_url, "SELECT state FROM wf_runs")}
    assert states == {"completed", "compensated"}
    assert pg_rows(pg_url, "SELECT count(*) FROM aifr_audit_records")[0][0] >= 20

    runs = run_cli(aifr_bin, tmp_path / "demo", env, "runs", "list", "--json")
    verify = run_cli(aifr_bin, tmp_path / "demo", env, "audit", "verify")
    assert runs.returncode == 0, runs.stderr
    assert {r["state"] for r in json.loads(runs.stdout)} == {"completed", "compensated"}
    assert {r["lease_owner"] for r in json.loads(runs.stdout)} == {None}  # all released
    assert verify.returncode == 0, verify.stderr


def test_a_postgresql_url_without_the_pg_extra_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aifr.storage.postgres import database as pg_database
    from aifr.storage.postgres.database import PostgresDatabase

    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    monkeypatch.setattr(pg_database, "_psycopg", None)  # as in an interpreter without them
    database = PostgresDatabase("postgresql://127.0.0.1:1/none")

    with pytest.raises(ConfigError) as missing:
        database.version("workflows")

    assert missing.value.code is ErrorCode.CONFIG_MISSING_EXTRA
    assert "aifr[pg]" in str(missing.value)


def test_an_idle_worker_is_woken_by_notify_for_a_newly_queued_run(
    tmp_path: Path,
    aifr_bin: str,
    clean_env: dict[str, str],
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subprocess.run(
        [aifr_bin, "init", str(tmp_path)], check=True, capture_output=True, env=clean_env
    )
    (tmp_path / "policies" / "default.yaml").write_text(
        "version: 1\nrules:\n  - id: data\n    when: {capability: 'data.*'}\n    decision: ALLOW\n"
    )
    (tmp_path / "workflows" / "one.yaml").write_text(
        "name: one\nsteps:\n  - id: parse\n    capability: data.json.parse\n"
        "    inputs: {text: '[1]'}\n"
    )
    env = {**clean_env, "AIFR_DATABASE_URL": pg_url}
    monkeypatch.setenv("AIFR_DATABASE_URL", pg_url)
    app = build_app(tmp_path)
    spec = app.workflow("one")
    worker = subprocess.Popen(
        [aifr_bin, "worker", "--poll", "120", "-p", str(tmp_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def state(run_id: str) -> str:
            rows = pg_rows(pg_url, "SELECT id, state FROM wf_runs")
            return next(str(row[1]) for row in rows if row[0] == run_id)

        def wait_completed(run_id: str) -> None:
            deadline = time.monotonic() + 30
            while state(run_id) != "completed":
                assert time.monotonic() < deadline, f"{run_id} was not picked up: no wake-up"
                time.sleep(0.1)

        wait_completed(app.workflows.start(spec, {}, "agent", execute=False).run.id)
        # The worker is now idle for 120 s of polling: only NOTIFY can wake it in time.
        wait_completed(app.workflows.start(spec, {}, "agent", execute=False).run.id)
    finally:
        app.close()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
