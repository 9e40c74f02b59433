"""Fixtures: a fresh workflow engine per test (see ``wf_env``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from wf_env import WfEnv, build_wf_env


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.pg)])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WfEnv]:
    """The engine on SQLite, and again on PostgreSQL (a fresh schema, dropped after)."""
    if request.param == "sqlite":
        built = build_wf_env(tmp_path)
        yield built
        built.close()
        return
    yield from _postgres_env(tmp_path)


@pytest.fixture
def pg_env(tmp_path: Path) -> Iterator[WfEnv]:
    """The engine on PostgreSQL only (a fresh schema, dropped after)."""
    yield from _postgres_env(tmp_path)


def _postgres_env(tmp_path: Path) -> Iterator[WfEnv]:
    dsn = os.environ.get("AIFR_TEST_PG_DSN")
    if not dsn:
        pytest.skip("AIFR_TEST_PG_DSN is not set: the PostgreSQL adapter needs a server")
    schema = f"aifr_test_{uuid.uuid4().hex[:12]}"
    built = build_wf_env(tmp_path, postgres=(dsn, schema))
    yield built
    built.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def sqlite_env(tmp_path: Path) -> Iterator[WfEnv]:
    """The engine on SQLite only, for tests that look at SQLite's own statements or file."""
    built = build_wf_env(tmp_path)
    yield built
    built.close()
