"""Fencing of audit records: a late worker cannot append a record for its leased run.

The ledger the runtime writes through (:class:`FencedLedger`) appends a step attempt's
record only while the run's lease epoch is the one the attempt began with; the database
checks it in the appending transaction. Two workers are two store instances over one
database (SQLite file or PostgreSQL schema), as two processes would be.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aifr.audit import AuditEvent, AuditLedger, AuditRecord
from aifr.errors import ErrorCode, WorkflowError
from aifr.storage.fenced_ledger import FencedLedger
from aifr.storage.postgres.audit import PostgresAuditStore
from aifr.storage.postgres.database import PostgresDatabase
from aifr.storage.postgres.runs import PostgresRunStore
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.audit import SqliteAuditStore
from aifr.storage.sqlite.runs import SqliteRunStore
from aifr.workflows import RunRecord, RunState, StepKey


@dataclass
class Worker:
    runs: SqliteRunStore | PostgresRunStore
    ledger: AuditLedger
    fenced: FencedLedger

    def append_in_own_transaction(self, event: AuditEvent) -> AuditRecord:
        """What another store (approvals) does: its own transaction, appending through us."""
        runs = self.runs
        if isinstance(runs, SqliteRunStore):

            def in_sqlite(conn: sqlite3.Connection) -> AuditRecord:
                return self.fenced.append_in(conn, event)

            return runs.group.run(in_sqlite)

        def in_pg(conn: Any) -> AuditRecord:  # psycopg's connection
            return self.fenced.append_in(conn, event)

        return runs.transact("appending", in_pg)


def _sqlite_worker(path: Path) -> Worker:
    database = SqliteDatabase(path, synchronous="NORMAL")
    ledger = AuditLedger(SqliteAuditStore(database))
    runs = SqliteRunStore(database, ledger)
    return Worker(runs, ledger, FencedLedger(ledger, runs))


def _pg_worker(dsn: str, schema: str) -> Worker:
    database = PostgresDatabase(dsn, schema=schema, max_size=2)
    ledger = AuditLedger(PostgresAuditStore(dsn, schema=schema))
    runs = PostgresRunStore(database, ledger)
    return Worker(runs, ledger, FencedLedger(ledger, runs))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.pg)])
def workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Worker, Worker]]:
    if request.param == "sqlite":
        pair = (_sqlite_worker(tmp_path / "aifr.db"), _sqlite_worker(tmp_path / "aifr.db"))
    else:
        dsn, schema = request.getfixturevalue("pg_schema")
        pair = (_pg_worker(dsn, schema), _pg_worker(dsn, schema))
    yield pair
    for worker in pair:
        worker.runs.database.close()
        worker.ledger.close()


KEY = str(StepKey("run-1", "a", 1))


def _run(owner: str | None) -> RunRecord:
    return RunRecord(
        id="run-1", workflow="w", workflow_version="1", definition={"name": "w"}, inputs={},
        principal="agent", roles=(), state=RunState.RUNNING, created_at=100.0,
        updated_at=100.0, lease_owner=owner, lease_expires_at=110.0 if owner else None,
    )  # fmt: skip


def _started(worker: Worker) -> None:
    worker.runs.create(_run("late"), [], AuditEvent(kind="started", principal="agent"))
    worker.runs.begin_attempt(KEY, unrecorded=True, finish=None)


def _failed_attempt(key: str = KEY) -> AuditEvent:
    return AuditEvent(
        kind="invocation", principal="agent", run_id="run-1", outcome="capability.failed",
        details={"idempotency_key": key, "status": "failed"},
    )  # fmt: skip


def test_a_failed_attempts_record_after_the_lease_was_taken_is_refused(
    workers: tuple[Worker, Worker],
) -> None:
    late, live = workers
    _started(late)
    assert live.runs.acquire("run-1", "live", 10.0, now=111.0) is not None  # expired: taken

    with pytest.raises(WorkflowError) as refused:
        late.fenced.append(_failed_attempt())

    assert refused.value.code is ErrorCode.WORKFLOW_LEASE_LOST
    assert [r.event.kind for r in live.ledger.records()] == ["started"]
    assert live.ledger.verify().ok


def test_a_record_appended_in_another_stores_transaction_is_refused_with_it(
    workers: tuple[Worker, Worker],
) -> None:
    late, live = workers
    _started(late)
    assert live.runs.acquire("run-1", "live", 10.0, now=111.0) is not None

    with pytest.raises(WorkflowError) as refused:
        late.append_in_own_transaction(_failed_attempt())

    assert refused.value.code is ErrorCode.WORKFLOW_LEASE_LOST
    assert [r.event.kind for r in live.ledger.records()] == ["started"]


def test_the_holder_appends_and_records_of_no_attempt_in_flight_are_not_fenced(
    workers: tuple[Worker, Worker],
) -> None:
    late, live = workers
    _started(late)
    late.fenced.append(_failed_attempt())  # still the holder: written
    late.append_in_own_transaction(_failed_attempt())
    assert live.runs.acquire("run-1", "live", 10.0, now=111.0) is not None

    late.fenced.append(AuditEvent(kind="approval.refused", principal="bob"))  # no step key
    late.fenced.append(_failed_attempt(str(StepKey("run-1", "a", 2))))  # not begun here
    live.runs.begin_attempt(KEY, unrecorded=True, finish=None)
    live.fenced.append(_failed_attempt())  # the new holder, under the new epoch

    kinds = [r.event.kind for r in live.ledger.records()]
    assert kinds == ["started", *["invocation"] * 2, "approval.refused", *["invocation"] * 2]
    assert live.ledger.verify().ok
