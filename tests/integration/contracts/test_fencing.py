"""Fencing: a worker whose lease was taken cannot write a step result, an audit record or its run.

Two workers are two store instances over one database (SQLite file or PostgreSQL
schema), as two processes would be; the late write is refused by the database's
conditional write on the lease epoch, not by the late worker's own clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aifr.audit import AuditEvent, AuditLedger
from aifr.errors import ErrorCode, WorkflowError
from aifr.invocation import IdempotencyStore
from aifr.storage.postgres.audit import PostgresAuditStore
from aifr.storage.postgres.database import PostgresDatabase
from aifr.storage.postgres.idempotency import PostgresIdempotencyStore
from aifr.storage.postgres.runs import PostgresRunStore
from aifr.storage.postgres.step_results import PostgresStepResultStore
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.audit import SqliteAuditStore
from aifr.storage.sqlite.idempotency import SqliteIdempotencyStore
from aifr.storage.sqlite.runs import SqliteRunStore
from aifr.storage.sqlite.step_results import StepResultStore
from aifr.workflows import RunRecord, RunState, StepKey, StepRecord, StepState


@dataclass
class Worker:
    runs: SqliteRunStore | PostgresRunStore
    results: IdempotencyStore
    ledger: AuditLedger


def _sqlite_worker(path: Path) -> Worker:
    database = SqliteDatabase(path, synchronous="NORMAL")
    ledger = AuditLedger(SqliteAuditStore(database))
    runs = SqliteRunStore(database, ledger)
    return Worker(runs, StepResultStore(runs, SqliteIdempotencyStore(database, ledger)), ledger)


def _pg_worker(dsn: str, schema: str) -> Worker:
    database = PostgresDatabase(dsn, schema=schema, max_size=2)
    ledger = AuditLedger(PostgresAuditStore(dsn, schema=schema))
    runs = PostgresRunStore(database, ledger)
    return Worker(
        runs, PostgresStepResultStore(runs, PostgresIdempotencyStore(database, ledger)), ledger
    )


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


def _run(owner: str | None) -> RunRecord:
    return RunRecord(
        id="run-1", workflow="w", workflow_version="1", definition={"name": "w"}, inputs={},
        principal="agent", roles=(), state=RunState.RUNNING, created_at=100.0,
        updated_at=100.0, lease_owner=owner, lease_expires_at=110.0 if owner else None,
    )  # fmt: skip


def _event(kind: str) -> AuditEvent:
    return AuditEvent(kind=kind, principal="agent", run_id="run-1")


def test_a_step_finished_after_the_lease_expired_and_was_taken_is_refused_with_its_audit(
    workers: tuple[Worker, Worker],
) -> None:
    late, live = workers
    late.runs.create(_run("late"), [StepRecord("run-1", "a", 0, "x.y")], _event("started"))
    key = str(StepKey("run-1", "a", 1))
    late.runs.begin_attempt(key, unrecorded=True, finish=None)
    late.results.claim("agent", key, "digest", now=101.0)

    assert live.runs.acquire("run-1", "live", 10.0, now=111.0) is not None  # expired: taken
    with pytest.raises(WorkflowError) as refused:
        late.results.complete("agent", key, {"output": 1}, 112.0, _event("invocation"))

    assert refused.value.code is ErrorCode.WORKFLOW_LEASE_LOST
    assert live.runs.step("run-1", "a").state is StepState.PENDING  # type: ignore[union-attr]
    assert [r.event.kind for r in live.ledger.records()] == ["started"]
    assert live.ledger.verify().ok


def test_a_late_worker_cannot_save_its_run_even_after_the_new_holder_released_it(
    workers: tuple[Worker, Worker],
) -> None:
    late, live = workers
    late.runs.create(_run("late"), [], _event("started"))
    assert live.runs.acquire("run-1", "live", 10.0, now=111.0) is not None
    live.runs.save(_run(None).evolve(state=RunState.COMPLETED), owner="live")  # released

    with pytest.raises(WorkflowError) as refused:
        late.runs.save(_run("late").evolve(state=RunState.FAILED), owner="late")

    assert refused.value.code is ErrorCode.WORKFLOW_LEASE_LOST
    assert live.runs.get("run-1").state is RunState.COMPLETED  # type: ignore[union-attr]


def test_a_late_worker_cannot_save_its_run_with_a_record_and_leaves_no_record(
    workers: tuple[Worker, Worker],
) -> None:
    # A save of the run alone with its audit record is one statement on PostgreSQL
    # (aifr_run_saved): the fence refuses it there, and its record is not appended.
    late, live = workers
    late.runs.create(_run("late"), [], _event("started"))
    assert live.runs.acquire("run-1", "live", 10.0, now=111.0) is not None
    before = [r.event.kind for r in live.ledger.records()]

    with pytest.raises(WorkflowError) as refused:
        late.runs.save(
            _run("late").evolve(state=RunState.FAILED), (), _event("failed"), owner="late"
        )
    saved = live.runs.save(
        _run("live").evolve(state=RunState.COMPLETED), (), _event("completed"), owner="live"
    )

    assert refused.value.code is ErrorCode.WORKFLOW_LEASE_LOST
    assert saved is not None and saved.event.kind == "completed"
    assert [r.event.kind for r in live.ledger.records()] == [*before, "completed"]
    assert live.runs.get("run-1").state is RunState.COMPLETED  # type: ignore[union-attr]
    assert live.ledger.verify().ok


def test_the_worker_that_holds_the_lease_still_commits_its_steps(
    workers: tuple[Worker, Worker],
) -> None:
    late, live = workers
    late.runs.create(_run("late"), [StepRecord("run-1", "a", 0, "x.y")], _event("started"))
    assert live.runs.acquire("run-1", "live", 10.0, now=111.0) is not None
    key = str(StepKey("run-1", "a", 1))
    live.runs.begin_attempt(key, unrecorded=True, finish=None)
    live.results.claim("agent", key, "digest", now=112.0)

    live.results.complete("agent", key, {"output": 1}, 113.0, _event("invocation"))

    assert late.runs.step("run-1", "a").state is StepState.COMPLETED  # type: ignore[union-attr]
    assert [r.event.kind for r in late.ledger.records()] == ["started", "invocation"]
