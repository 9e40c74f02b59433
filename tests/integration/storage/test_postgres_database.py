"""The PostgreSQL state database: several processes opening one fresh schema at once."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from aifr.errors import ErrorCode, StorageError, WorkflowError
from aifr.storage.postgres import database as database_module
from aifr.storage.postgres.audit import PostgresAuditStore
from aifr.storage.postgres.database import PostgresDatabase, translate_pg_errors
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


@pytest.mark.pg
def test_a_lent_connection_comes_back_idle_and_a_transaction_it_left_open_is_not_kept(
    pg_schema: tuple[str, str],
) -> None:
    """The pool lends one connection at a time here: what a block left behind is seen next.

    A block that sent ``BEGIN`` and never ended its transaction does not get it
    committed on its way back to the pool (nothing ends a transaction but its writer).
    """
    dsn, schema = pg_schema
    database = PostgresDatabase(dsn, schema=schema, max_size=1)
    try:
        with database.connection() as conn:
            conn.execute("CREATE TABLE lent (n INTEGER)")
            conn.execute("INSERT INTO lent VALUES (1)")  # autocommit: kept at once
        with database.connection() as conn:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO lent VALUES (2)")
        with database.connection() as again:
            assert again.info.transaction_status is psycopg.pq.TransactionStatus.IDLE
            assert again.execute("SELECT n FROM lent ORDER BY n").fetchall() == [(1,)]
        with pytest.raises(RuntimeError), database.connection() as conn:
            raise RuntimeError("the block failed")
        with database.connection() as again:  # the failed block's connection is lent again
            assert again.execute("SELECT count(*) FROM lent").fetchone() == (1,)
    finally:
        database.close()


@pytest.mark.pg
def test_translated_errors_name_the_action_and_let_everything_else_through(
    pg_schema: tuple[str, str],
) -> None:
    dsn, schema = pg_schema
    database = PostgresDatabase(dsn, schema=schema)
    try:
        with pytest.raises(StorageError) as failed:
            with translate_pg_errors("reading the moon"), database.connection() as conn:
                conn.execute("SELECT * FROM no_such_table")
        assert failed.value.message.startswith("reading the moon failed: ")
        assert "no_such_table" in failed.value.message
        assert isinstance(failed.value.__cause__, psycopg.errors.UndefinedTable)

        with pytest.raises(WorkflowError) as lost:
            with translate_pg_errors("completing a step"), database.connection() as conn:
                conn.execute(
                    "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'AF001', "
                    "MESSAGE = 'late result', DETAIL = 'run-1'; END $$"
                )
        assert lost.value.code is ErrorCode.WORKFLOW_LEASE_LOST
        assert lost.value.message == "late result"

        own = StorageError("already ours", action="x")
        with pytest.raises(StorageError) as passed, translate_pg_errors("anything"):
            raise own
        assert passed.value is own
        with pytest.raises(KeyError), translate_pg_errors("anything"):
            raise KeyError("not psycopg's")
        with translate_pg_errors("nothing raised"):
            pass
    finally:
        database.close()
