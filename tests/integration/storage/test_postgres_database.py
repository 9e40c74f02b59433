"""The PostgreSQL state database: several processes opening one fresh schema at once."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from aifr.errors import StorageError
from aifr.storage.postgres import database as database_module
from aifr.storage.postgres.audit import PostgresAuditStore
from aifr.storage.postgres.database import PostgresDatabase
from aifr.storage.postgres.runs import PG_WORKFLOW_MIGRATIONS


@pytest.mark.pg
def test_workers_opening_one_fresh_schema_together_all_start_and_migrate_once(
    pg_schema: tuple[str, str],
) -> None:
    dsn, schema = pg_schema
    barrier = threading.Barrier(6)
    versions: list[int] = []
    errors: list[BaseException] = []

    def start() -> None:
        database = PostgresDatabase(dsn, schema=schema, max_size=1)
        try:
            barrier.wait()
            PostgresAuditStore(dsn, schema=schema).close()
            versions.append(database.migrate("workflows", PG_WORKFLOW_MIGRATIONS))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            database.close()

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert versions == [PG_WORKFLOW_MIGRATIONS[-1].version] * 6


def test_a_server_that_never_answers_is_reported_in_libpqs_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pool keeps trying a server it cannot reach; when it gives up, the error says why."""
    monkeypatch.setattr(database_module, "CONNECT_WAIT_S", 1.0)
    database = PostgresDatabase("postgresql://postgres@127.0.0.1:1/test")  # nothing listens

    with pytest.raises(StorageError) as refused:
        database.pool()

    assert "for 1 s" in refused.value.message
    assert "127.0.0.1" in refused.value.message and "port 1" in refused.value.message
    assert "pool initialization" not in refused.value.message


@pytest.mark.pg
def test_a_schema_the_role_may_not_create_is_refused_at_once_with_the_servers_reason(
    pg_schema: tuple[str, str],
) -> None:
    """A missing privilege does not come back by itself: no 30 s of retries for it."""
    dsn, schema = pg_schema
    role = f"aifr_limited_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        database = PostgresDatabase(make_conninfo(dsn, user=role), schema=schema)
        started = time.monotonic()
        with pytest.raises(StorageError) as refused:
            database.pool()
        waited = time.monotonic() - started
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))

    assert waited < 10
    assert f"preparing schema {schema!r}" in refused.value.message
    assert "permission denied" in refused.value.message
