"""The CLI on a PostgreSQL state database (``AIFR_DATABASE_URL=postgresql://...``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cli_kit import run_cli
from psycopg import sql

from aifr.errors import ConfigError, ErrorCode

pytestmark = pytest.mark.pg


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A ``postgresql://...?schema=...`` URL of a fresh schema, dropped after the test."""
    dsn = os.environ.get("AIFR_TEST_PG_DSN")
    if not dsn:
        pytest.skip("AIFR_TEST_PG_DSN is not set: the PostgreSQL adapter needs a server")
    schema = f"aifr_test_{uuid.uuid4().hex[:12]}"
    yield f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    dsn, schema = url.rsplit("schema=", 1)
    with psycopg.connect(dsn.rstrip("?&"), autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        return conn.execute(query).fetchall()


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
    states = {row[0] for row in _rows(pg_url, "SELECT state FROM wf_runs")}
    assert states == {"completed", "compensated"}
    assert _rows(pg_url, "SELECT count(*) FROM aifr_audit_records")[0][0] >= 20

    runs = run_cli(aifr_bin, tmp_path / "demo", env, "runs", "list", "--json")
    verify = run_cli(aifr_bin, tmp_path / "demo", env, "audit", "verify")
    assert runs.returncode == 0, runs.stderr
    assert {r["state"] for r in json.loads(runs.stdout)} == {"completed", "compensated"}
    assert verify.returncode == 0, verify.stderr


def test_a_postgresql_url_without_the_pg_extra_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aifr.storage.postgres.database import PostgresDatabase

    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    database = PostgresDatabase("postgresql://127.0.0.1:1/none")

    with pytest.raises(ConfigError) as missing:
        database.version("workflows")

    assert missing.value.code is ErrorCode.CONFIG_MISSING_EXTRA
    assert "aifr[pg]" in str(missing.value)
