"""``aifr db status|upgrade``: schema versions on SQLite and PostgreSQL, upgrades in place."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from cli_kit import pg_rows, run_cli

from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.audit import AUDIT_MIGRATIONS
from aifr.storage.sqlite.runs import WORKFLOW_MIGRATIONS


@pytest.fixture
def project(tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]) -> Path:
    subprocess.run(
        [aifr_bin, "init", str(tmp_path)], check=True, capture_output=True, env=clean_env
    )
    return tmp_path


def _status(aifr_bin: str, project: Path, env: dict[str, str]) -> dict[str, str]:
    shown = run_cli(aifr_bin, project, env, "db", "status", "--json")
    return {row["component"]: row["status"] for row in json.loads(shown.stdout)}


def test_a_state_database_made_before_lease_epochs_is_upgraded_in_place_keeping_its_runs(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    database = SqliteDatabase(project / ".aifr" / "aifr.db")
    database.migrate("audit", AUDIT_MIGRATIONS)
    database.migrate("workflows", WORKFLOW_MIGRATIONS[:1])  # the schema aifr 0.x wrote
    database.connect().execute(
        "INSERT INTO wf_runs VALUES ('run-old', 'w', '1', '{\"name\": \"w\", \"steps\": []}', "
        "'{}', 'agent', '[]', 'completed', '{}', NULL, NULL, 0, 1.0, 1.0, NULL, NULL)"
    )
    database.close()

    before = _status(aifr_bin, project, clean_env)
    upgraded = run_cli(aifr_bin, project, clean_env, "db", "upgrade", "--json")
    runs = run_cli(aifr_bin, project, clean_env, "runs", "list", "--json")

    assert before["workflows"] == "pending" and before["audit"] == "up to date"
    assert upgraded.returncode == 0, upgraded.stderr
    assert {row["status"] for row in json.loads(upgraded.stdout)} == {"up to date"}
    assert [r["id"] for r in json.loads(runs.stdout)] == ["run-old"]
    with sqlite3.connect(project / ".aifr" / "aifr.db") as raw:
        assert raw.execute("SELECT lease_epoch FROM wf_runs").fetchall() == [(0,)]


def test_a_sqlite_database_newer_than_the_code_is_refused_by_every_command(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    assert run_cli(aifr_bin, project, clean_env, "db", "upgrade").returncode == 0
    with sqlite3.connect(project / ".aifr" / "aifr.db") as raw:
        raw.execute("UPDATE schema_versions SET version = 99 WHERE component = 'workflows'")

    runs = run_cli(aifr_bin, project, clean_env, "runs", "list")
    status = run_cli(aifr_bin, project, clean_env, "db", "status")
    upgrade = run_cli(aifr_bin, project, clean_env, "db", "upgrade")

    for refused in (runs, status, upgrade):
        assert refused.returncode != 0
        assert "storage.schema_mismatch" in refused.stderr
        assert "newer" in refused.stderr
    assert "newer" in status.stdout  # the table still shows which component


@pytest.mark.pg
def test_postgresql_schemas_are_versioned_and_a_newer_one_is_refused(
    project: Path, aifr_bin: str, clean_env: dict[str, str], pg_url: str
) -> None:
    env = {**clean_env, "AIFR_DATABASE_URL": pg_url}
    before = _status(aifr_bin, project, env)
    upgraded = run_cli(aifr_bin, project, env, "db", "upgrade")
    after = _status(aifr_bin, project, env)
    pg_rows(pg_url, "UPDATE schema_versions SET version = 7 WHERE component = 'approvals'")
    refused = run_cli(aifr_bin, project, env, "approvals", "list")

    assert set(before.values()) == {"pending"}
    assert upgraded.returncode == 0, upgraded.stderr
    assert set(after.values()) == {"up to date"}
    assert refused.returncode != 0
    assert "storage.schema_mismatch" in refused.stderr


def _socket_url(pg_url: str) -> str:
    """``pg_url``'s database and schema reached through the server's Unix socket."""
    dsn, schema = pg_url.rsplit("schema=", 1)
    with psycopg.connect(dsn.rstrip("?&")) as conn:
        directories = str(conn.execute("SHOW unix_socket_directories").fetchone()[0])
        database = conn.info.dbname
    directory = next((d.strip() for d in directories.split(",") if d.strip()), "")
    if not directory.startswith("/") or not Path(directory).is_dir():
        pytest.skip(f"the server listens on no Unix socket directory here ({directories!r})")
    return f"postgres:///{database}?host={directory}&schema={schema}"


@pytest.mark.pg
def test_a_unix_socket_url_with_no_host_works_for_every_command(
    project: Path, aifr_bin: str, clean_env: dict[str, str], pg_url: str
) -> None:
    """``postgres:///db?host=/run/postgresql``: libpq's form for a local socket.

    Rebuilding the URL (to take aifr's ``schema=`` out) once dropped its ``//`` and libpq
    refused what was left.
    """
    env = {**clean_env, "AIFR_DATABASE_URL": _socket_url(pg_url)}

    upgraded = run_cli(aifr_bin, project, env, "db", "upgrade")
    status = _status(aifr_bin, project, env)
    verified = run_cli(aifr_bin, project, env, "audit", "verify")

    assert upgraded.returncode == 0, upgraded.stderr
    assert set(status.values()) == {"up to date"}
    assert verified.returncode == 0, verified.stderr
    assert pg_rows(pg_url, "SELECT count(*) FROM schema_versions") == [(len(status),)]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice:s3cret-pw@127.0.0.1:1/test?sslmode=disable&colour=blue",
        "postgres:/alice:s3cret-pw@127.0.0.1/test",  # one slash: not a PostgreSQL URL at all
    ],
)
@pytest.mark.parametrize("command", [("db", "status"), ("audit", "verify"), ("runs", "list")])
def test_a_url_that_cannot_be_read_is_refused_at_once_without_its_password(
    project: Path, aifr_bin: str, clean_env: dict[str, str], url: str, command: tuple[str, ...]
) -> None:
    """No server is needed to refuse it: the URL is checked before anything connects."""
    env = {**clean_env, "AIFR_DATABASE_URL": url}

    started = time.monotonic()
    refused = run_cli(aifr_bin, project, env, *command)

    assert time.monotonic() - started < 20  # the pool would have retried it for 30 s
    assert refused.returncode != 0
    assert "config.invalid" in refused.stderr
    assert ('"colour"' in refused.stderr) == ("colour" in url)  # libpq names the bad part
    assert "s3cret-pw" not in "".join((refused.stderr + refused.stdout).split())  # unwrapped
