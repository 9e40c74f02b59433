"""Group commit on both backends: steps of concurrent runs share a commit, and stay correct.

Real SQLite files and a real PostgreSQL schema. A batch is forced deterministically by
holding the group's current transaction open until every writer has queued behind it;
the batch must then be one commit, each writer must see its own result committed (read
through another connection) when its call returns, and a fenced write inside the batch
(a lease taken by another worker meanwhile) must fail alone, audit record included.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.waiting import Wait
from wf_env import WfEnv, build_wf_env

from aifr.audit import AuditEvent, AuditLedger, AuditRecord
from aifr.errors import AuditError, ErrorCode, StorageError, WorkflowError
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
from aifr.workflows import (
    RunRecord,
    RunState,
    StepKey,
    StepRecord,
    StepState,
    WorkflowBuilder,
)
from aifr.workflows.ports import RunFinish

RUNS = 6
FENCED = {"run-1", "run-4"}


@dataclass
class Worker:
    runs: SqliteRunStore | PostgresRunStore
    results: IdempotencyStore
    ledger: AuditLedger


def _sqlite_worker(path: Path) -> Worker:
    database = SqliteDatabase(path, synchronous="FULL")
    ledger = AuditLedger(SqliteAuditStore(database))
    runs = SqliteRunStore(database, ledger)
    return Worker(runs, StepResultStore(runs, SqliteIdempotencyStore(database, ledger)), ledger)


def _pg_worker(dsn: str, schema: str) -> Worker:
    database = PostgresDatabase(dsn, schema=schema, max_size=4)
    ledger = AuditLedger(PostgresAuditStore(dsn, schema=schema))
    runs = PostgresRunStore(database, ledger)
    return Worker(
        runs, PostgresStepResultStore(runs, PostgresIdempotencyStore(database, ledger)), ledger
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.pg)])
def workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Worker, Worker]]:
    """Two workers (two store instances, as two processes) over one database."""
    if request.param == "sqlite":
        pair = (_sqlite_worker(tmp_path / "aifr.db"), _sqlite_worker(tmp_path / "aifr.db"))
    else:
        dsn, schema = request.getfixturevalue("pg_schema")
        pair = (_pg_worker(dsn, schema), _pg_worker(dsn, schema))
    yield pair
    for worker in pair:
        worker.runs.database.close()
        worker.ledger.close()


def _run(run_id: str) -> RunRecord:
    return RunRecord(
        id=run_id, workflow="w", workflow_version="1", definition={"name": "w"}, inputs={},
        principal="agent", roles=(), state=RunState.RUNNING, created_at=100.0,
        updated_at=100.0, lease_owner="mine", lease_expires_at=110.0,
    )  # fmt: skip


def _hold_until_queued(worker: Worker, expected: int) -> tuple[threading.Thread, list[bool]]:
    """Start a transaction in the group that stays open until ``expected`` writers queue."""
    queued: list[bool] = []
    inside = threading.Event()

    def hold(_conn: object) -> None:
        inside.set()
        deadline = time.monotonic() + 30
        while worker.runs.group.waiting() < expected and time.monotonic() < deadline:
            time.sleep(0.005)
        queued.append(worker.runs.group.waiting() == expected)

    holder = threading.Thread(target=worker.runs.group.run, args=(hold,))
    holder.start()
    assert inside.wait(30)
    return holder, queued


def _create_runs(worker: Worker, ids: list[str]) -> None:
    for run_id in ids:
        worker.runs.create(
            _run(run_id),
            [StepRecord(run_id, "a", 0, "x.y")],
            AuditEvent(kind="started", principal="agent", run_id=run_id),
        )


UNENCODABLE = {"note": "half a surrogate pair: \ud800"}
"""Details no audit record can hold: the text is not valid Unicode."""


def _complete_in_one_batch(
    worker: Worker,
    ids: list[str],
    after: Callable[[str], None] = lambda _run_id: None,
    *,
    unencodable: frozenset[str] = frozenset(),
) -> dict[str, object]:
    """Complete step ``a`` of every run in one forced batch; each writer's record or error.

    ``after(run_id)`` runs on the writer's thread as soon as its call has returned. The
    runs in ``unencodable`` finish with an event the ledger refuses (:data:`UNENCODABLE`),
    which must fail before its writer joins the batch.
    """
    for run_id in ids:
        key = str(StepKey(run_id, "a", 1))
        worker.runs.begin_attempt(key, unrecorded=True, finish=None)
        worker.results.claim("agent", key, "digest", now=101.0)
    holder, queued = _hold_until_queued(worker, len(ids) - len(unencodable))
    outcomes: dict[str, object] = {}

    def finish(run_id: str) -> None:
        key = str(StepKey(run_id, "a", 1))
        details = UNENCODABLE if run_id in unencodable else {}
        event = AuditEvent(kind="invocation", principal="agent", run_id=run_id, details=details)
        try:
            outcomes[run_id] = worker.results.complete("agent", key, {"output": 1}, 112.0, event)
        except (WorkflowError, AuditError) as exc:
            outcomes[run_id] = exc
        after(run_id)

    writers = [threading.Thread(target=finish, args=(run_id,)) for run_id in ids]
    for writer in writers:
        writer.start()
    for writer in [holder, *writers]:
        writer.join(60)
    assert queued == [True]
    return outcomes


def test_steps_of_concurrent_runs_share_one_commit_and_a_fenced_one_fails_alone(
    workers: tuple[Worker, Worker],
) -> None:
    mine, other = workers
    ids = [f"run-{n}" for n in range(RUNS)]
    _create_runs(mine, ids)
    for run_id in sorted(FENCED):  # the lease expired and another worker took it
        assert other.runs.acquire(run_id, "other", 10.0, now=111.0) is not None
    group = mine.runs.group
    commits, jobs = group.commits, group.jobs
    seen_committed: dict[str, bool] = {}

    def seen(run_id: str) -> None:
        step = other.runs.step(run_id, "a")  # another connection: only committed rows
        seen_committed[run_id] = step is not None and step.state is StepState.COMPLETED

    outcomes = _complete_in_one_batch(mine, ids, after=seen)

    assert group.commits - commits == 2  # the held transaction, then all six in one
    assert group.jobs - jobs == 1 + RUNS
    assert group.largest_batch >= RUNS
    for run_id in ids:
        if run_id in FENCED:
            refused = outcomes[run_id]
            assert isinstance(refused, WorkflowError)
            assert refused.code is ErrorCode.WORKFLOW_LEASE_LOST
            assert not seen_committed[run_id]
            assert other.runs.step(run_id, "a").state is StepState.PENDING  # type: ignore[union-attr]
        else:
            assert isinstance(outcomes[run_id], AuditRecord)
            assert seen_committed[run_id]  # durable before the call returned
    kinds = [(r.event.kind, r.event.run_id) for r in other.ledger.records()]
    assert sorted(k for k in kinds if k[0] == "invocation") == [
        ("invocation", run_id) for run_id in ids if run_id not in FENCED
    ]
    assert other.ledger.verify().ok


def _traced_batch(
    worker: Worker, ids: list[str], *, unencodable: frozenset[str] = frozenset()
) -> tuple[list[str], dict[str, object]]:
    """:func:`_complete_in_one_batch` on SQLite, with every statement its writer ran."""
    statements: list[str] = []
    writer = worker.runs.database.writer()  # type: ignore[union-attr]  # SQLite only
    writer.set_trace_callback(statements.append)
    try:
        outcomes = _complete_in_one_batch(worker, ids, unencodable=unencodable)
    finally:
        writer.set_trace_callback(None)
    return statements, outcomes


_TRANSACTION_STATEMENTS = ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")


def test_a_sqlite_batch_with_no_refusal_opens_no_savepoint(tmp_path: Path) -> None:
    # Two statements per job (SAVEPOINT, RELEASE) are paid only when a job raised: the
    # first attempt runs the batch straight through and commits once.
    worker = _sqlite_worker(tmp_path / "aifr.db")
    try:
        ids = [f"run-{n}" for n in range(RUNS)]
        _create_runs(worker, ids)
        statements, outcomes = _traced_batch(worker, ids)
        assert all(isinstance(outcomes[run_id], AuditRecord) for run_id in ids)
        assert not [s for s in statements if "SAVEPOINT" in s or "RELEASE" in s]
        transactions = [s for s in statements if s in _TRANSACTION_STATEMENTS]
        assert transactions == ["BEGIN IMMEDIATE", "COMMIT"] * 2  # the held one, then all
        assert worker.ledger.verify().ok
    finally:
        worker.runs.database.close()
        worker.ledger.close()


def test_an_unencodable_step_event_is_refused_before_its_writer_joins_a_batch(
    workers: tuple[Worker, Worker],
) -> None:
    # On both backends the ledger checks and encodes a step's event before the group
    # sees the write: the refused writer adds no job to any transaction, and the others
    # share one commit.
    mine, other = workers
    ids = [f"run-{n}" for n in range(RUNS)]
    _create_runs(mine, ids)
    group = mine.runs.group
    commits, jobs = group.commits, group.jobs

    outcomes = _complete_in_one_batch(mine, ids, unencodable=frozenset({"run-2"}))

    refused = outcomes["run-2"]
    assert isinstance(refused, AuditError) and "not JSON-safe" in str(refused)
    assert all(isinstance(outcomes[run_id], AuditRecord) for run_id in ids if run_id != "run-2")
    assert group.commits - commits == 2  # the held transaction, then the other five
    assert group.jobs - jobs == RUNS  # the held one and five: none for the refused writer
    assert other.runs.step("run-2", "a").state is StepState.PENDING  # type: ignore[union-attr]
    invocations = [
        str(r.event.run_id) for r in other.ledger.records() if r.event.kind == "invocation"
    ]
    assert sorted(invocations) == [run_id for run_id in ids if run_id != "run-2"]
    assert other.ledger.verify().ok


def test_an_unencodable_step_event_fails_before_the_batch_which_commits_once_without_it(
    tmp_path: Path,
) -> None:
    # The ledger checks and encodes a step's event before its writer joins a batch: the
    # bad one is refused alone, and the batch neither rolls back nor opens a savepoint.
    worker = _sqlite_worker(tmp_path / "aifr.db")
    try:
        ids = [f"run-{n}" for n in range(RUNS)]
        _create_runs(worker, ids)
        statements, outcomes = _traced_batch(worker, ids, unencodable=frozenset({"run-2"}))
        refused = outcomes["run-2"]
        assert isinstance(refused, AuditError) and "not JSON-safe" in str(refused)
        assert all(isinstance(outcomes[run_id], AuditRecord) for run_id in ids if run_id != "run-2")
        transactions = [s for s in statements if s in _TRANSACTION_STATEMENTS]
        assert transactions == ["BEGIN IMMEDIATE", "COMMIT"] * 2  # the held one, then the rest
        assert not [s for s in statements if "SAVEPOINT" in s or "RELEASE" in s]
        assert worker.runs.step("run-2", "a").state is StepState.PENDING  # type: ignore[union-attr]
        invocations = [
            str(r.event.run_id) for r in worker.ledger.records() if r.event.kind == "invocation"
        ]
        assert sorted(invocations) == [run_id for run_id in ids if run_id != "run-2"]
        assert worker.ledger.verify().ok
    finally:
        worker.runs.database.close()
        worker.ledger.close()


def test_a_sqlite_batch_with_a_refused_job_is_rolled_back_then_run_job_by_job(
    tmp_path: Path,
) -> None:
    mine, other = _sqlite_worker(tmp_path / "aifr.db"), _sqlite_worker(tmp_path / "aifr.db")
    try:
        ids = [f"run-{n}" for n in range(RUNS)]
        _create_runs(mine, ids)
        for run_id in sorted(FENCED):  # the lease expired and another worker took it
            assert other.runs.acquire(run_id, "other", 10.0, now=111.0) is not None
        statements, outcomes = _traced_batch(mine, ids)
        transactions = [s for s in statements if s in _TRANSACTION_STATEMENTS]
        assert transactions == [
            *("BEGIN IMMEDIATE", "COMMIT"),  # the held transaction
            *("BEGIN IMMEDIATE", "ROLLBACK"),  # all at once: a job was refused
            *("BEGIN IMMEDIATE", "COMMIT"),  # job by job
        ]
        assert statements.count("SAVEPOINT grouped_job") == RUNS
        assert statements.count("ROLLBACK TO grouped_job") == len(FENCED)
        for run_id in ids:
            if run_id in FENCED:
                assert outcomes[run_id].code is ErrorCode.WORKFLOW_LEASE_LOST  # type: ignore[attr-defined]
            else:
                assert isinstance(outcomes[run_id], AuditRecord)
        invocations = [
            str(r.event.run_id) for r in other.ledger.records() if r.event.kind == "invocation"
        ]
        assert sorted(invocations) == sorted(set(ids) - FENCED)  # none twice, none refused
        assert other.ledger.verify().ok
    finally:
        for worker in (mine, other):
            worker.runs.database.close()
            worker.ledger.close()


class _ReadWaits:
    """Counts, in threads other than ``skip``, the times a client waited for the server.

    As ``test_pg_round_trips`` counts them: a run of read waits (an answer arriving in
    pieces) with nothing sent in between is one wait.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, skip: threading.Thread) -> None:
        self.on = False
        self.waits = 0
        self._lock = threading.Lock()
        wait = psycopg.Connection.wait

        def counted(gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
            previous = None
            try:
                state = next(gen)
                while True:
                    if state == Wait.R and previous != Wait.R:
                        with self._lock:
                            self.waits += 1
                    previous = state
                    state = gen.send((yield state))
            except StopIteration as stop:
                return stop.value

        def counting_wait(conn: Any, gen: Any, *args: Any, **kwargs: Any) -> Any:
            if self.on and threading.current_thread() is not skip:
                gen = counted(gen)
            return wait(conn, gen, *args, **kwargs)

        monkeypatch.setattr(psycopg.Connection, "wait", counting_wait)


@pytest.mark.pg
def test_a_batch_with_no_refusal_waits_for_the_server_once(
    pg_schema: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # BEGIN, every job's statements, the audit tail and COMMIT travel together: the
    # batch's leader waits once, for COMMIT's answer (one per job before, one per
    # job's savepoint).
    mine = _pg_worker(*pg_schema)
    try:
        ids = [f"run-{n}" for n in range(RUNS)]
        for run_id in ids:
            mine.runs.create(
                _run(run_id),
                [StepRecord(run_id, "a", 0, "x.y")],
                AuditEvent(kind="started", principal="agent", run_id=run_id),
            )
            key = str(StepKey(run_id, "a", 1))
            mine.runs.begin_attempt(key, unrecorded=True, finish=None)
            mine.results.claim("agent", key, "digest", now=101.0)
        group = mine.runs.group
        commits = group.commits
        holder, queued = _hold_until_queued(mine, RUNS)
        counter = _ReadWaits(monkeypatch, skip=holder)
        counter.on = True
        with psycopg.connect(pg_schema[0], autocommit=True) as control:
            control.execute("SELECT 1")  # sent, then its answer awaited: one wait
        assert counter.waits == 1
        counter.waits = 0
        records: dict[str, object] = {}

        def finish(run_id: str) -> None:
            key = str(StepKey(run_id, "a", 1))
            event = AuditEvent(kind="invocation", principal="agent", run_id=run_id)
            records[run_id] = mine.results.complete("agent", key, {"output": 1}, 112.0, event)

        writers = [threading.Thread(target=finish, args=(run_id,)) for run_id in ids]
        for writer in writers:
            writer.start()
        for writer in [holder, *writers]:
            writer.join(60)
        counter.on = False

        assert queued == [True]
        assert group.commits - commits == 2  # the held transaction, then all six in one
        assert all(isinstance(records[run_id], AuditRecord) for run_id in ids)
        # Once, for COMMIT's answer; or not at all, where every answer came in while the
        # pipeline was still being sent (a loaded host: a CI run on 2026-11-29 read 0).
        assert counter.waits <= 1
        steps = [mine.runs.step(run_id, "a") for run_id in ids]
        assert [s.audit_id for s in steps if s is not None] == [records[i].id for i in ids]  # type: ignore[attr-defined]
        assert mine.ledger.verify().ok
    finally:
        mine.runs.database.close()
        mine.ledger.close()


@pytest.mark.pg
def test_a_batch_of_completed_steps_sends_begin_its_tail_and_commit_only(
    pg_schema: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # In a batch's first attempt a completed step's job sends nothing: the audit tail
    # locks each step's row under its fence (before the chain's lock), appends the
    # records and writes the rows. Before, every job sent its own fenced lock.
    mine = _pg_worker(*pg_schema)
    sent: list[str] = []
    execute = psycopg.Connection.execute
    tail = "SELECT r_seq, r_id, r_ts, r_prev, r_hash FROM aifr_audit_append_fenced_steps("

    def recording(conn: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(" ".join(str(query).split())[: len(tail)])
        return execute(conn, query, *args, **kwargs)

    try:
        ids = [f"run-{n}" for n in range(RUNS)]
        _create_runs(mine, ids)
        monkeypatch.setattr(psycopg.Connection, "execute", recording)
        outcomes = _complete_in_one_batch(mine, ids)
        monkeypatch.undo()

        assert all(isinstance(outcomes[run_id], AuditRecord) for run_id in ids)
        assert sent == ["BEGIN", "COMMIT", "BEGIN", tail, "COMMIT"]  # the holder's, then ours
        steps = [mine.runs.step(run_id, "a") for run_id in ids]
        assert [s.audit_id for s in steps if s is not None] == [outcomes[i].id for i in ids]  # type: ignore[attr-defined]
        assert mine.ledger.verify().ok
    finally:
        mine.runs.database.close()
        mine.ledger.close()


_COUNT_STEP_WRITES = (
    "CREATE TABLE step_writes (run_id TEXT NOT NULL)",
    "CREATE FUNCTION count_step_write() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN INSERT INTO step_writes VALUES (NEW.run_id); RETURN NEW; END $$",
    "CREATE TRIGGER count_step_write BEFORE UPDATE ON wf_steps "
    "FOR EACH ROW EXECUTE FUNCTION count_step_write()",
)


@pytest.mark.pg
def test_a_batched_step_writes_its_row_once_with_its_result_and_record(
    pg_schema: tuple[str, str],
) -> None:
    # A batched step locks its row under its fence and the audit tail writes the result
    # and the record's id together: one new version of the wide row per step (two before:
    # the result in the job, audit_id in the tail). A trigger counts the row writes; the
    # fenced runs send the batch through its job-by-job retry, which must do the same.
    dsn, schema = pg_schema
    mine, other = _pg_worker(dsn, schema), _pg_worker(dsn, schema)
    try:
        ids = [f"run-{n}" for n in range(RUNS)]
        _create_runs(mine, ids)
        for run_id in sorted(FENCED):
            assert other.runs.acquire(run_id, "other", 10.0, now=111.0) is not None
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            for statement in _COUNT_STEP_WRITES:
                conn.execute(statement)

            outcomes = _complete_in_one_batch(mine, ids)

            writes = [row[0] for row in conn.execute("SELECT run_id FROM step_writes")]
        completed = [run_id for run_id in ids if run_id not in FENCED]
        assert sorted(writes) == completed  # once each; none for a refused step
        for run_id in completed:
            record = outcomes[run_id]
            assert isinstance(record, AuditRecord)
            step = other.runs.step(run_id, "a")
            assert step is not None
            assert (step.state, step.attempt, step.output, step.finished_at) == (
                StepState.COMPLETED, 1, 1, 112.0,
            )  # fmt: skip
            assert step.audit_id == record.id
            stored = other.results.get("agent", str(StepKey(run_id, "a", 1)))
            assert stored is not None
            assert (stored.request_digest, stored.result) == ("digest", {"output": 1})
        for run_id in sorted(FENCED):
            assert other.runs.step(run_id, "a").state is StepState.PENDING  # type: ignore[union-attr]
        assert other.ledger.verify().ok
    finally:
        for worker in (mine, other):
            worker.runs.database.close()
            worker.ledger.close()


def test_a_failed_shared_commit_fails_every_job_of_the_batch_and_writes_none(
    workers: tuple[Worker, Worker],
) -> None:
    mine, other = workers
    group = mine.runs.group
    holder, _queued = _hold_until_queued(mine, 3)
    errors: list[BaseException] = []

    def create(run_id: str) -> None:
        try:
            mine.runs.create(
                _run(run_id), [], AuditEvent(kind="started", principal="agent", run_id=run_id)
            )
        except Exception as exc:  # collected and checked below
            errors.append(exc)

    def poison(_conn: object) -> None:  # not an AifrError: aborts the whole batch
        raise RuntimeError("the transaction broke")

    def broken() -> None:
        try:
            group.run(poison)
        except Exception as exc:  # RuntimeError as leader, else StorageError
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(f"run-{n}",)) for n in range(2)]
    threads.append(threading.Thread(target=broken))
    for thread in threads:
        thread.start()
    for thread in [holder, *threads]:
        thread.join(60)

    assert len(errors) == 3
    assert other.runs.get("run-0") is None and other.runs.get("run-1") is None
    assert list(other.ledger.records()) == []
    mine.runs.create(_run("run-9"), [], AuditEvent(kind="started", principal="agent"))
    assert other.runs.get("run-9") is not None  # leadership was handed on


@pytest.mark.pg
def test_a_batch_whose_connection_broke_is_not_retried_and_fails_every_job(
    pg_schema: tuple[str, str],
) -> None:
    # The connection broke before COMMIT's answer came back: COMMIT may have landed, so a
    # retry could write twice. Every job gets the error; the batch is not run again.
    mine, other = _pg_worker(*pg_schema), _pg_worker(*pg_schema)
    try:
        group = mine.runs.group
        holder, _queued = _hold_until_queued(mine, 3)
        errors: list[BaseException] = []
        calls: list[int] = []

        def create(run_id: str) -> None:
            try:
                mine.runs.create(
                    _run(run_id), [], AuditEvent(kind="started", principal="agent", run_id=run_id)
                )
            except Exception as exc:  # collected and checked below
                errors.append(exc)

        def kill_own_backend(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            calls.append(1)
            if len(calls) == 1:  # a retry would find the connection whole and commit all
                conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

        def broken() -> None:
            try:
                group.run(kill_own_backend)
            except Exception as exc:  # collected and checked below
                errors.append(exc)

        threads = [threading.Thread(target=create, args=(f"run-{n}",)) for n in range(2)]
        threads.append(threading.Thread(target=broken))
        for thread in threads:
            thread.start()
        for thread in [holder, *threads]:
            thread.join(60)

        assert calls == [1]
        assert len(errors) == 3
        assert all(isinstance(exc, StorageError) for exc in errors)
        assert other.runs.get("run-0") is None and other.runs.get("run-1") is None
        assert list(other.ledger.records()) == []
        mine.runs.create(_run("run-9"), [], AuditEvent(kind="started", principal="agent"))
        assert other.runs.get("run-9") is not None  # a fresh connection, leadership handed on
    finally:
        for worker in (mine, other):
            worker.runs.database.close()
            worker.ledger.close()


@pytest.mark.pg
def test_a_lone_step_stores_every_field_of_its_record_as_given(
    pg_schema: tuple[str, str],
) -> None:
    # Alone, a step's record goes to aifr_step_recorded as 14 parameters of their own (the
    # id's random part, the event's JSON, 11 columns, the details): each lands in its
    # column, awkward text included, and the chain verifies from what was stored.
    mine = _pg_worker(*pg_schema)
    awkward = 'naïve "quoted" \\ back\nslash 🚀'
    try:
        _create_runs(mine, ["run-0"])
        key = str(StepKey("run-0", "a", 1))
        mine.runs.begin_attempt(key, unrecorded=True, finish=None)
        mine.results.claim("agent", key, "digest", now=101.0)
        event = AuditEvent(
            kind="invocation",
            principal=awkward,
            capability_id="cap.one",
            capability_fingerprint="f" * 64,
            decision="ALLOW",
            rule_id="rule-1",
            inputs_digest="d" * 64,
            outcome="ok",
            trace_id="t" * 32,
            request_id="q" * 32,
            run_id="run-0",
            details={"text": awkward, "n": [1, 2.5, None]},
        )
        commits = mine.runs.group.commits
        record = mine.results.complete("agent", key, {"output": 1}, 112.0, event)

        assert mine.runs.group.commits - commits == 1 and mine.runs.group.largest_batch == 1
        (stored,) = [r for r in mine.ledger.records() if r.id == record.id]
        assert stored.event == event
        assert (stored.seq, stored.ts, stored.prev_hash, stored.hash) == (
            record.seq, record.ts, record.prev_hash, record.hash,
        )  # fmt: skip
        assert mine.runs.step("run-0", "a").audit_id == record.id  # type: ignore[union-attr]
        assert mine.ledger.verify().ok
    finally:
        mine.runs.database.close()
        mine.ledger.close()


@pytest.mark.parametrize("undo", [False, True])
def test_a_lone_late_step_is_refused_by_the_database_and_appends_nothing(
    workers: tuple[Worker, Worker], undo: bool
) -> None:
    # Alone, a step's write on PostgreSQL is one server-side statement (aifr_step_recorded):
    # its fence refuses it there, before the chain is touched.
    mine, other = workers
    for run_id in ("late", "kept"):
        mine.runs.create(
            _run(run_id),
            [StepRecord(run_id, "a", 0, "x.y")],
            AuditEvent(kind="started", principal="agent", run_id=run_id),
        )
    assert other.runs.acquire("late", "other", 10.0, now=111.0) is not None
    outcomes: dict[str, object] = {}
    for run_id in ("late", "kept"):
        key = str(StepKey(run_id, "a", 1, is_undo=undo))
        mine.runs.begin_attempt(key, unrecorded=True, finish=None)
        mine.results.claim("agent", key, "digest", now=101.0)
        # hashed on the server: awkward text, which verify() below rehashes in Python
        details = {"text": 'naïve 東京 🚀 "q" \\ \n', "東": [1.5, None]}
        event = AuditEvent(kind="invocation", principal="agent", run_id=run_id, details=details)
        try:
            outcomes[run_id] = mine.results.complete("agent", key, {"output": 1}, 112.0, event)
        except WorkflowError as exc:
            outcomes[run_id] = exc
    refused, kept = outcomes["late"], outcomes["kept"]
    assert isinstance(refused, WorkflowError)
    assert refused.code is ErrorCode.WORKFLOW_LEASE_LOST
    assert refused.details.get("run_id") == "late"
    assert other.runs.step("late", "a").state is StepState.PENDING  # type: ignore[union-attr]
    assert isinstance(kept, AuditRecord)
    done = StepState.COMPENSATED if undo else StepState.COMPLETED
    step = other.runs.step("kept", "a")
    assert step is not None and step.state is done
    assert step.audit_id == (None if undo else kept.id)  # named in the same statement
    assert [r.event.run_id for r in other.ledger.records() if r.event.kind == "invocation"] == [
        "kept"
    ]
    assert other.ledger.verify().ok


def test_a_late_step_that_would_end_its_run_is_refused_as_a_lost_lease(
    workers: tuple[Worker, Worker],
) -> None:
    # The run's end is written with its last step, in a savepoint; the step's own refusal
    # must surface as the lost lease it is, not be taken for the savepoint's.
    mine, other = workers
    run = _run("late")
    mine.runs.create(
        run, [StepRecord("late", "a", 0, "x.y")], AuditEvent(kind="started", principal="agent")
    )
    assert other.runs.acquire("late", "other", 10.0, now=111.0) is not None
    key = str(StepKey("late", "a", 1))
    ended = run.evolve(state=RunState.COMPLETED, lease_owner=None, lease_expires_at=None)
    finish = RunFinish(ended, AuditEvent(kind="completed", principal="agent"), "mine")
    mine.runs.begin_attempt(key, unrecorded=True, finish=finish)
    mine.results.claim("agent", key, "digest", now=101.0)
    with pytest.raises(WorkflowError) as refused:
        mine.results.complete(
            "agent", key, {"output": 1}, 112.0, AuditEvent(kind="invocation", principal="agent")
        )
    assert refused.value.code is ErrorCode.WORKFLOW_LEASE_LOST
    assert other.runs.step("late", "a").state is StepState.PENDING  # type: ignore[union-attr]
    assert other.runs.get("late").state is RunState.RUNNING  # type: ignore[union-attr]
    assert [r.event.kind for r in other.ledger.records()] == ["started"]
    assert other.ledger.verify().ok


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.pg)])
def durable_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WfEnv]:
    """The engine at SQLite's durable default (FULL), or on PostgreSQL."""
    if request.param == "sqlite":
        built = build_wf_env(tmp_path, synchronous="FULL")
        yield built
        built.close()
        return
    dsn = os.environ.get("AIFR_TEST_PG_DSN")
    if not dsn:
        pytest.skip("AIFR_TEST_PG_DSN is not set: the PostgreSQL adapter needs a server")
    schema = f"aifr_test_{uuid.uuid4().hex[:12]}"
    built = build_wf_env(tmp_path, postgres=(dsn, schema))
    yield built
    built.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_eight_engines_driving_runs_at_once_commit_fewer_times_than_they_write(
    durable_env: WfEnv,
) -> None:
    """As ``aifr worker --concurrency 8``: one engine (lease owner) per thread, one store."""
    spec = WorkflowBuilder("five").step("a", "test.noop")
    for name in "bcde":
        spec = spec.step(name, "test.noop")
    built = spec.build()
    engines = [durable_env.new_engine() for _ in range(8)]
    states: list[RunState] = []
    lock = threading.Lock()
    start = threading.Barrier(len(engines))

    def drive(engine: object) -> None:
        start.wait()
        for _ in range(6):
            view = engine.start(built, {}, "agent")  # type: ignore[attr-defined]
            with lock:
                states.append(view.state)

    threads = [threading.Thread(target=drive, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    group = durable_env.runs.group
    assert states == [RunState.COMPLETED] * 48
    assert group.jobs == 48 * 6  # per run: create, five steps (the last with the run's end)
    assert group.commits < group.jobs * 0.8
    assert group.largest_batch > 1
    completed = {
        s.state for run in durable_env.runs.list(limit=100) for s in durable_env.runs.steps(run.id)
    }
    assert completed == {StepState.COMPLETED}
    assert durable_env.ledger.verify().ok
