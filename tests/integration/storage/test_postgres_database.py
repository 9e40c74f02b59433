"""The PostgreSQL state database: several processes opening one fresh schema at once."""

from __future__ import annotations

import threading

import pytest

from aifr.storage.postgres.audit import PostgresAuditStore
from aifr.storage.postgres.database import PostgresDatabase
from aifr.storage.postgres.runs import PG_WORKFLOW_MIGRATIONS

pytestmark = pytest.mark.pg


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
