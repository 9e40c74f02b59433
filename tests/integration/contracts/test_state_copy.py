"""``copy_state``: every table of the state, both directions, all or nothing.

Real SQLite files and real PostgreSQL schemas; ``tests/e2e/test_cli_db_copy.py`` runs
the command on projects with every kind of state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from aifr.audit import AuditEvent, AuditLedger
from aifr.errors import ErrorCode, StorageError
from aifr.storage.postgres.audit import PostgresAuditStore
from aifr.storage.postgres.database import PostgresDatabase
from aifr.storage.schema import upgrade_schema
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.audit import SqliteAuditStore
from aifr.storage.state_copy import STATE_TABLES, copy_state, state_counts

# Tables a migrated database has that are not the project's state, on purpose.
LEFT_OUT = {"schema_versions", "sqlite_sequence", "wf_workers", "aifr_audit_head"}


@pytest.fixture
def pg(pg_schema: tuple[str, str]) -> Iterator[PostgresDatabase]:
    database = PostgresDatabase(*pg_schema[:1], schema=pg_schema[1], max_size=4)
    upgrade_schema(database)
    yield database
    database.close()


def _sqlite(path: Path) -> SqliteDatabase:
    database = SqliteDatabase(path, synchronous="NORMAL")
    upgrade_schema(database)
    return database


def _tables(database: SqliteDatabase | PostgresDatabase) -> set[str]:
    if isinstance(database, SqliteDatabase):
        rows = database.connect().execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {str(row[0]) for row in rows}
    with database.connection() as conn:
        found = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    return {str(row[0]) for row in found}


def _ledger(database: SqliteDatabase | PostgresDatabase) -> AuditLedger:
    if isinstance(database, SqliteDatabase):
        return AuditLedger(SqliteAuditStore(database))
    return AuditLedger(PostgresAuditStore(database.dsn, schema=database.schema))


def _fill(database: SqliteDatabase | PostgresDatabase, records: int = 2_500) -> None:
    """Audit records (more than one batch of the copy) and rows of a serial table."""
    ledger = _ledger(database)
    for n in range(records):
        ledger.append(AuditEvent(kind="test.event", principal="p", details={"n": n}))
    ledger.close()
    statement = (
        "INSERT INTO wf_outbox (kind, url, body, created_at, next_attempt_at) "
        "VALUES ('approval', 'http://127.0.0.1/hook', '{}', 1.0, 1.0)"
    )
    if isinstance(database, SqliteDatabase):
        with database.transaction() as conn:
            for _ in range(3):
                conn.execute(statement)
        return
    with database.transaction() as conn:
        for _ in range(3):
            conn.execute(statement)


@pytest.mark.pg
def test_every_table_of_a_migrated_database_is_copied_or_left_out_on_purpose(
    tmp_path: Path, pg: PostgresDatabase
) -> None:
    """A table added by a migration must be named in STATE_TABLES (or here) to pass."""
    sqlite = _sqlite(tmp_path / "aifr.db")

    assert _tables(sqlite) - LEFT_OUT == {table.on(sqlite) for table in STATE_TABLES}
    assert _tables(pg) - LEFT_OUT == {table.on(pg) for table in STATE_TABLES}
    sqlite.close()


@pytest.mark.pg
def test_sqlite_to_postgresql_and_back_keeps_every_record_and_the_chain(
    tmp_path: Path, pg: PostgresDatabase
) -> None:
    source = _sqlite(tmp_path / "source.db")
    _fill(source)
    back = _sqlite(tmp_path / "back.db")

    there = copy_state(source, pg)
    again = copy_state(pg, back)

    assert there.rows["audit_records"] == again.rows["audit_records"] == 2_500
    assert there.rows["wf_outbox"] == again.rows["wf_outbox"] == 3
    assert (there.head_seq, there.head_hash) == (again.head_seq, again.head_hash)
    assert state_counts(back) == state_counts(pg) == state_counts(source)
    original = source.connect().execute("SELECT * FROM audit_records ORDER BY seq").fetchall()
    returned = back.connect().execute("SELECT * FROM audit_records ORDER BY seq").fetchall()
    assert [tuple(r) for r in returned] == [tuple(r) for r in original]
    for database in (pg, back):
        ledger = _ledger(database)
        report = ledger.verify()
        assert report.ok and report.head_seq == 2_500, report.message
        # the chain goes on from the copied head, and each serial column past its rows
        assert ledger.append(AuditEvent(kind="test.after", principal="p")).seq == 2_501
        ledger.close()
    with pg.connection() as conn:
        (next_id,) = conn.execute(
            "INSERT INTO wf_outbox (kind, url, body, created_at, next_attempt_at) "
            "VALUES ('approval', 'http://127.0.0.1/hook', '{}', 1.0, 1.0) RETURNING id"
        ).fetchone()
    assert next_id == 4
    source.close()
    back.close()


@pytest.mark.pg
def test_a_target_holding_state_is_refused_before_anything_is_written(
    tmp_path: Path, pg: PostgresDatabase
) -> None:
    source = _sqlite(tmp_path / "source.db")
    _fill(source, records=3)
    _fill(pg, records=1)
    before = state_counts(pg)

    with pytest.raises(StorageError) as refused:
        copy_state(source, pg)

    assert refused.value.code is ErrorCode.STORAGE_NOT_EMPTY
    assert "audit_records (1 rows)" in str(refused.value)
    assert state_counts(pg) == before
    source.close()


@pytest.mark.pg
def test_a_row_the_target_refuses_midway_rolls_the_whole_copy_back(
    tmp_path: Path, pg: PostgresDatabase
) -> None:
    """A step row whose run is missing passes SQLite (its foreign keys off) but not PostgreSQL."""
    source = _sqlite(tmp_path / "source.db")
    _fill(source, records=1_200)
    raw = sqlite3.connect(source.path)
    raw.execute(
        "INSERT INTO wf_steps (run_id, step_id, idx, capability, state, attempt, undo_attempt) "
        "VALUES ('run-gone', 's1', 0, 'x.y', 'pending', 0, 0)"
    )
    raw.commit()
    raw.close()

    with pytest.raises(StorageError, match="foreign key") as refused:
        copy_state(source, pg)

    assert "wf_steps" in str(refused.value)
    assert set(state_counts(pg).values()) == {0}  # the audit records written first are gone too
    source.close()


@pytest.mark.pg
def test_a_column_one_side_lacks_is_refused_by_name(tmp_path: Path, pg: PostgresDatabase) -> None:
    source = _sqlite(tmp_path / "source.db")
    source.connect().execute("ALTER TABLE circuits ADD COLUMN note TEXT")

    with pytest.raises(StorageError, match=r"circuits: the two databases' columns differ \(note\)"):
        copy_state(source, pg)
    source.close()


@pytest.mark.pg
def test_a_run_someone_is_driving_is_refused_and_an_expired_lease_is_released(
    tmp_path: Path, pg: PostgresDatabase
) -> None:
    """A live lease means a process drives the run in the source: copied, it would run twice."""
    source = _sqlite(tmp_path / "source.db")
    with source.transaction() as conn:
        for run_id, expires in (("run-held", 1_030.0), ("run-lapsed", 990.0)):
            conn.execute(
                "INSERT INTO wf_runs VALUES (?, 'w', '1', '{\"name\": \"w\", \"steps\": []}', "
                "'{}', 'agent', '[]', 'running', '{}', NULL, NULL, 0, 1.0, 1.0, "
                "'host:1:aa', ?, 3, NULL)",
                (run_id, expires),
            )

    with pytest.raises(StorageError, match=r"run-held \(held by host:1:aa\)") as refused:
        copy_state(source, pg, now=1_000.0)
    assert refused.value.code is ErrorCode.STORAGE_IN_USE
    assert set(state_counts(pg).values()) == {0}

    copied = copy_state(source, pg, now=1_031.0)  # once its holder's lease ran out

    assert copied.released_leases == 2
    with pg.connection() as conn:
        leases = conn.execute("SELECT lease_owner, lease_epoch FROM wf_runs").fetchall()
    assert leases == [(None, 3), (None, 3)]  # free to take; the epoch still fences the old holder
    source.close()
