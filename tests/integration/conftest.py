"""Fixtures for integration tests: a fresh PostgreSQL schema per test, dropped after."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from aifr.audit import AuditLedger
from aifr.storage.postgres.audit import PostgresAuditStore
from aifr.storage.postgres.database import PostgresDatabase


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """``(dsn, schema)`` of an empty schema on the test server, dropped after the test."""
    dsn = os.environ.get("AIFR_TEST_PG_DSN")
    if not dsn:
        pytest.skip("AIFR_TEST_PG_DSN is not set: the PostgreSQL adapter needs a server")
    schema = f"aifr_test_{uuid.uuid4().hex[:12]}"
    yield dsn, schema
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def pg_state(pg_schema: tuple[str, str]) -> Iterator[tuple[PostgresDatabase, AuditLedger]]:
    """A PostgreSQL state database and audit ledger in a fresh schema."""
    dsn, schema = pg_schema
    database = PostgresDatabase(dsn, schema=schema, max_size=4)
    audit = PostgresAuditStore(dsn, schema=schema)
    yield database, AuditLedger(audit)
    audit.close()
    database.close()
