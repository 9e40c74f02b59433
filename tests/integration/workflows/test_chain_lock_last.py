"""PostgreSQL: the audit chain's lock is taken last, and fencing and commit order still hold.

Real PostgreSQL, two store instances over one schema (as two worker processes). A
transaction writes its rows first and appends its audit record at its end, under the
chain's lock; so a writer whose rows are written but not yet committed does not hold
the chain, a step write that passed its fence keeps the run's row until it commits (a
takeover waits for it), and the chain stays one verifiable chain in commit order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from aifr.audit import AuditEvent, AuditLedger, AuditRecord
from aifr.storage.postgres.audit import PostgresAuditStore
from aifr.storage.postgres.database import PostgresDatabase
from aifr.storage.postgres.idempotency import PostgresIdempotencyStore
from aifr.storage.postgres.runs import PostgresRunStore
from aifr.storage.postgres.step_results import PostgresStepResultStore
from aifr.workflows import RunRecord, RunState, StepKey, StepRecord

pytestmark = pytest.mark.pg


@dataclass
class Worker:
    runs: PostgresRunStore
    results: PostgresStepResultStore
    ledger: AuditLedger


def _worker(dsn: str, schema: str) -> Worker:
    database = PostgresDatabase(dsn, schema=schema, max_size=4)
    ledger = AuditLedger(PostgresAuditStore(dsn, schema=schema))
    runs = PostgresRunStore(database, ledger)
    results = PostgresStepResultStore(runs, PostgresIdempotencyStore(database, ledger))
    return Worker(runs, results, ledger)


@pytest.fixture
def pair(pg_schema: tuple[str, str]) -> Iterator[tuple[Worker, Worker]]:
    dsn, schema = pg_schema
    workers = (_worker(dsn, schema), _worker(dsn, schema))
    yield workers
    for worker in workers:
        worker.runs.database.close()
        worker.ledger.close()


def _run(run_id: str, owner: str = "mine") -> RunRecord:
    return RunRecord(
        id=run_id, workflow="w", workflow_version="1", definition={"name": "w"}, inputs={},
        principal="agent", roles=(), state=RunState.RUNNING, created_at=100.0,
        updated_at=100.0, lease_owner=owner, lease_expires_at=110.0,
    )  # fmt: skip


def _event(kind: str, run_id: str) -> AuditEvent:
    return AuditEvent(kind=kind, principal="agent", run_id=run_id)


def test_a_writer_with_rows_written_does_not_hold_the_chain_and_the_chain_follows_commits(
    pair: tuple[Worker, Worker],
) -> None:
    mine, other = pair
    mine.runs.create(_run("run-a"), [StepRecord("run-a", "a", 0, "x.y")], _event("s", "run-a"))
    wrote_rows = threading.Event()
    release = threading.Event()

    def slow(conn: psycopg.Connection[tuple[object, ...]]) -> object:
        pending = mine.runs.save_in(
            conn, _run("run-a").evolve(updated_at=101.0), (), _event("saved", "run-a"), None, None
        )
        wrote_rows.set()
        assert release.wait(30)
        return pending

    results: list[object] = []
    writer = threading.Thread(target=lambda: results.append(mine.runs.group.run(slow)))
    writer.start()
    assert wrote_rows.wait(30)
    # Another process appends (and commits) while the first one's transaction is open
    # with its rows written: before, the first held the chain from its first statement.
    started = time.monotonic()
    record = other.runs.create(_run("run-b", "other"), [], _event("created", "run-b"))
    assert time.monotonic() - started < 5
    assert other.runs.get("run-a").updated_at == 100.0  # type: ignore[union-attr]  # not committed
    release.set()
    writer.join(30)

    saved = results[0].record  # type: ignore[attr-defined]
    assert saved.seq == record.seq + 1  # the chain's order is the commits' order
    assert other.runs.get("run-a").updated_at == 101.0  # type: ignore[union-attr]
    kinds = [r.event.kind for r in other.ledger.records()]
    assert kinds == ["s", "created", "saved"]
    assert other.ledger.verify().ok


def test_a_step_write_that_passed_its_fence_keeps_the_run_until_it_commits(
    pair: tuple[Worker, Worker], pg_schema: tuple[str, str]
) -> None:
    mine, other = pair
    dsn, schema = pg_schema
    mine.runs.create(_run("run-a"), [StepRecord("run-a", "a", 0, "x.y")], _event("s", "run-a"))
    assert mine.runs.acquire("run-a", "mine", 10.0, now=100.0) is not None
    key = str(StepKey("run-a", "a", 1))
    mine.runs.begin_attempt(key, unrecorded=True, finish=None)
    mine.results.claim("agent", key, "digest", now=101.0)

    with psycopg.connect(dsn) as chain_holder:  # holds the audit chain's lock
        chain_holder.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        chain_holder.execute("SELECT id FROM aifr_audit_head WHERE id = 1 FOR UPDATE")
        completed: list[AuditRecord] = []
        step = threading.Thread(
            target=lambda: completed.append(
                mine.results.complete("agent", key, {"output": 1}, 102.0, _event("step", "run-a"))
            )
        )
        step.start()
        time.sleep(0.5)  # the step's fenced write is in, its audit record waits for the chain
        taken: list[RunRecord | None] = []
        takeover = threading.Thread(
            target=lambda: taken.append(other.runs.acquire("run-a", "other", 10.0, now=200.0))
        )
        takeover.start()
        takeover.join(1.5)
        assert takeover.is_alive()  # the lease cannot move between the fence and the commit
        assert step.is_alive()
        chain_holder.rollback()
    step.join(30)
    takeover.join(30)

    assert len(completed) == 1
    assert taken[0] is not None and taken[0].lease_owner == "other"
    assert [r.event.kind for r in other.ledger.records()] == ["s", "step"]
    assert other.runs.step("run-a", "a").audit_id == completed[0].id  # type: ignore[union-attr]
    assert other.ledger.verify().ok
