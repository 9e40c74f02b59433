"""Fixtures for the CLI tests: a fresh PostgreSQL schema as a ``database_url``."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql


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


def pg_rows(url: str, query: str) -> list[tuple[object, ...]]:
    """Run ``query`` in the schema a :func:`pg_url` URL names."""
    dsn, schema = url.rsplit("schema=", 1)
    with psycopg.connect(dsn.rstrip("?&"), autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description is not None else []
