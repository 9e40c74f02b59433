"""The workflow RunStore and NotificationOutbox contract, run against every adapter."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aifr.audit import AuditEvent, AuditLedger
from aifr.errors import ErrorCode, WorkflowError
from aifr.storage.postgres import runs as pg_runs
from aifr.storage.postgres.database import PostgresDatabase
from aifr.storage.postgres.runs import PostgresRunStore
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite import runs as sqlite_runs
from aifr.storage.sqlite.audit import SqliteAuditStore
from aifr.storage.sqlite.runs import SqliteRunStore
from aifr.workflows import Notification, RunRecord, RunState, RunStore, StepRecord, StepState
from aifr.workflows.ports import ACTIVE_STATES


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.pg)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteRunStore]:
    if request.param == "postgres":
        database, ledger = request.getfixturevalue("pg_state")
        yield PostgresRunStore(database, ledger)  # type: ignore[misc]  # same ports
        return
    database = SqliteDatabase(tmp_path / "aifr.db", synchronous="NORMAL")
    yield SqliteRunStore(database, AuditLedger(SqliteAuditStore(database)))
    database.close()


def _run(run_id: str = "run-1", created_at: float = 100.0, **changes: object) -> RunRecord:
    values: dict[str, object] = {
        "id": run_id,
        "workflow": "w",
        "workflow_version": "1",
        "definition": {"name": "w", "steps": [{"id": "a", "capability": "x.y"}]},
        "inputs": {"path": "a.txt", "n": 2},
        "principal": "agent",
        "roles": ("dev",),
        "state": RunState.PENDING,
        "created_at": created_at,
        "updated_at": created_at,
        "fingerprints": {"a": "f" * 64},
    }
    values.update(changes)
    return RunRecord(**values)  # type: ignore[arg-type]


def _step(run_id: str = "run-1", step_id: str = "a", index: int = 0) -> StepRecord:
    return StepRecord(run_id=run_id, step_id=step_id, index=index, capability="x.y")


def _event(kind: str = "workflow.created") -> AuditEvent:
    return AuditEvent(kind=kind, principal="agent", run_id="run-1")


def test_a_created_run_and_its_steps_read_back_unchanged(store: RunStore) -> None:
    store.create(_run(), [_step(), _step(step_id="b", index=1)], _event())

    assert store.get("run-1") == _run()
    assert [s.step_id for s in store.steps("run-1")] == ["a", "b"]
    assert store.step("run-1", "b") == _step(step_id="b", index=1)
    assert store.get("run-2") is None


def test_saving_writes_the_run_and_steps_together(store: RunStore) -> None:
    store.create(_run(), [_step()], _event())
    done = _step().evolve(state=StepState.COMPLETED, output={"ok": True}, attempt=2)

    record = store.save(
        _run(state=RunState.COMPLETED, error=None, updated_at=101.0),
        [done],
        _event("workflow.completed"),
    )

    assert record is not None and record.event.kind == "workflow.completed"
    assert store.get("run-1").state is RunState.COMPLETED
    assert store.step("run-1", "a") == done


def test_only_the_lease_holder_may_save_and_an_expired_lease_can_be_taken(store: RunStore) -> None:
    store.create(_run(), [_step()], _event())
    assert store.acquire("run-1", "w1", 10.0, now=100.0) is not None
    assert store.acquire("run-1", "w2", 10.0, now=105.0) is None

    with pytest.raises(WorkflowError) as lost:
        store.save(_run(state=RunState.RUNNING), owner="w2")
    assert lost.value.code is ErrorCode.WORKFLOW_LEASE_LOST

    store.renew(["run-1"], "w1", 10.0, now=108.0)
    assert store.acquire("run-1", "w2", 10.0, now=115.0) is None
    taken = store.acquire("run-1", "w2", 10.0, now=119.0)
    assert taken is not None and taken.lease_owner == "w2"
    assert store.take_over("run-1", "w2", "w3", 10.0, now=120.0)
    store.release("run-1", "w3")
    assert store.get("run-1").lease_owner is None


def test_unfinished_runs_list_oldest_first_and_cancel_is_flagged(store: RunStore) -> None:
    store.create(_run("run-2", 200.0, state=RunState.RUNNING), [], _event())
    store.create(_run("run-1", 100.0, state=RunState.WAITING_APPROVAL), [], _event())
    store.create(_run("run-3", 300.0, state=RunState.COMPLETED), [], _event())

    unfinished = store.unfinished(frozenset({RunState.RUNNING, RunState.WAITING_APPROVAL}))
    assert [r.id for r in unfinished] == ["run-1", "run-2"]
    assert [r.id for r in store.list()] == ["run-3", "run-2", "run-1"]
    assert [r.id for r in store.list(state=RunState.COMPLETED)] == ["run-3"]
    assert not store.is_cancel_requested("run-2")
    store.request_cancel("run-2")
    assert store.is_cancel_requested("run-2")


def test_a_notification_saved_with_a_run_is_delivered_or_retried_later(
    store: SqliteRunStore,
) -> None:
    store.create(_run(), [], _event())
    note = Notification("approval.requested", "http://127.0.0.1:9/hook", {"approval_id": "ap-1"})
    store.save(_run(state=RunState.WAITING_APPROVAL, updated_at=110.0), notification=note)

    (item,) = store.due(now=110.0)
    assert item.notification == note
    store.retry_later(item.id, next_attempt_at=150.0, error="ConnectError")
    assert store.due(now=149.0) == []
    (again,) = store.due(now=150.0)
    assert (again.attempts, again.last_error) == (1, "ConnectError")
    store.delivered(again.id, now=151.0)
    assert store.pending() == 0
    assert store.due(now=1e12) == []


def test_the_queue_hands_each_free_run_to_one_worker_oldest_first(store: RunStore) -> None:
    store.create(_run("run-2", 200.0), [], _event())
    store.create(_run("run-1", 100.0, lease_owner="busy", lease_expires_at=1e12), [], _event())
    store.create(_run("run-3", 300.0, state=RunState.COMPLETED), [], _event())
    store.create(_run("run-4", 400.0, state=RunState.RUNNING), [], _event())
    active = frozenset({RunState.PENDING, RunState.RUNNING})

    first = store.claim(active, "w1", 10.0, now=500.0)
    second = store.claim(active, "w2", 10.0, now=500.0)

    assert (first and first.id, second and second.id) == ("run-2", "run-4")
    assert first is not None and first.lease_owner == "w1"
    assert store.claim(active, "w3", 10.0, now=505.0) is None  # all held, none expired
    again = store.claim(active, "w3", 10.0, now=511.0)  # w1's and w2's leases lapsed
    assert again is not None and again.id == "run-2" and again.lease_owner == "w3"


def test_concurrent_claims_never_hand_one_run_to_two_workers(store: RunStore) -> None:
    for n in range(30):
        store.create(_run(f"run-{n:02d}", float(n)), [], _event())
    claimed: list[str] = []
    lock = threading.Lock()

    def work(owner: str) -> None:
        while (run := store.claim(frozenset({RunState.PENDING}), owner, 60.0, 100.0)) is not None:
            with lock:
                claimed.append(run.id)

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(claimed) == [f"run-{n:02d}" for n in range(30)]


def test_a_claim_reads_the_run_once_and_its_steps_in_order(store: RunStore) -> None:
    run = _run()
    steps = [
        _step(step_id=step_id, index=index) for step_id, index in (("c", 2), ("a", 0), ("b", 1))
    ]
    store.create(run, steps, _event())

    taken = store.claim(frozenset(ACTIVE_STATES), "w1", 10.0, now=200.0)

    assert taken is not None
    assert (taken.definition, taken.inputs, taken.fingerprints, taken.roles) == (
        run.definition, run.inputs, run.fingerprints, run.roles,
    )  # fmt: skip
    assert [s.step_id for s in store.steps("run-1")] == ["a", "b", "c"]
    if isinstance(store, PostgresRunStore):  # the server sent the run's columns once
        store.release("run-1", "w1")
        with store.database.connection() as conn:
            rows = conn.execute(
                pg_runs._claim_sql(frozenset(ACTIVE_STATES)), (300.0, "w2", 310.0, 300.0)
            ).fetchall()
        width = len(pg_runs._RUN_NAMES)
        assert rows[0][:2] == ("run-1", "w")
        assert all(row[:width] == (None,) * width for row in rows[1:])
        assert [row[width + 3] for row in rows] == ["a", "b", "c"]  # its run id, then its id


def test_a_claim_of_states_outside_the_queue_takes_the_oldest_free_run_in_them(
    store: RunStore,
) -> None:
    # Waiting runs are not in the queue's index: such a claim finds them another way,
    # leases the oldest free one with its steps, and leaves a leased one alone.
    waiting = RunState.WAITING_APPROVAL
    store.create(_run("run-new", 300.0, state=waiting), [_step("run-new")], _event())
    store.create(_run("run-old", 200.0, state=waiting), [_step("run-old")], _event())
    store.create(_run("run-pending", 100.0), [], _event())
    store.create(_run("run-leased", 50.0, state=waiting), [], _event())
    assert store.claim(frozenset({waiting}), "w0", 60.0, now=400.0) is not None  # run-leased

    taken = store.claim(frozenset({waiting}), "w1", 60.0, now=400.0)

    assert taken is not None and (taken.id, taken.state) == ("run-old", waiting)
    assert taken.lease_owner == "w1" and [s.step_id for s in store.steps("run-old")] == ["a"]
    nxt = store.claim(frozenset({waiting}), "w2", 60.0, now=400.0)
    assert nxt is not None and nxt.id == "run-new"
    assert store.claim(frozenset({waiting}), "w3", 60.0, now=400.0) is None


def _claim_plan(store: RunStore) -> str:
    """How SQLite finds the work queue's oldest free run (its query plan, as text)."""
    assert isinstance(store, SqliteRunStore)
    rows = store.database.connect().execute(
        "EXPLAIN QUERY PLAN " + sqlite_runs._oldest_free_sql(frozenset(ACTIVE_STATES)), (1e9,)
    )
    return "\n".join(row[3] for row in rows)


def _pick_buffers(store: PostgresRunStore) -> int:
    """Buffers PostgreSQL reads to find (and lock) the queue's oldest free run in a claim.

    The claim's pick (``aifr_oldest_free_run``, which ``aifr_claim_run`` calls) runs in
    ``EXPLAIN (ANALYZE, BUFFERS)`` and is rolled back. Picked three times first on the
    same connection, so its own first-call costs (compiling the function, reading the
    catalog) are not counted.
    """
    values = ",".join(sorted(state.value for state in ACTIVE_STATES))
    pick = f"SELECT * FROM aifr_oldest_free_run('{{{values}}}'::text[], %s)"  # noqa: S608  # enum literals
    with store.database.connection() as conn:
        for _ in range(4):
            conn.execute("BEGIN")
            plan = [
                row[0]
                for row in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + pick, (2000.0,)).fetchall()
            ]
            conn.execute("ROLLBACK")
    buffers = next(line for line in plan if "Buffers:" in line)
    return int(buffers.split("shared hit=")[1].split()[0])


def test_the_queue_is_claimed_through_its_index_however_long_the_history(
    store: RunStore,
) -> None:
    # 400 finished runs and 400 queued ones: a claim walks the queue's partial index in
    # order and stops at the first free run. Before it, every claim read the whole table
    # and sorted the active runs, a cost that grew with the queue and the history.
    for n in range(400):
        store.create(_run(f"done-{n:03d}", float(n), state=RunState.COMPLETED), [], _event())
        store.create(_run(f"todo-{n:03d}", 1000.0 + n), [], _event())

    if isinstance(store, PostgresRunStore):
        with store.database.connection() as conn:
            conn.execute("ANALYZE wf_runs")
        assert _pick_buffers(store) <= 6  # the index's root and leaf, the run's page
    else:
        plan = _claim_plan(store)
        assert "wf_runs_claimable" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # SQLite sorted them
    taken = store.claim(frozenset(ACTIVE_STATES), "w1", 10.0, now=2000.0)
    assert taken is not None and taken.id == "todo-000"


@pytest.mark.pg
def test_a_burst_queued_after_the_statistics_were_taken_is_claimed_through_the_index(
    pg_state: tuple[PostgresDatabase, AuditLedger],
) -> None:
    # Statistics taken while the table was empty (a new deployment's, or a quiet
    # spell's), 400 runs queued after them: planned by cost alone, the pick read every
    # queued run and sorted them (17 buffers here). Its function walks the index
    # whatever the statistics say.
    store = PostgresRunStore(*pg_state)
    with store.database.connection() as conn:
        conn.execute("ANALYZE wf_runs")
    for n in range(400):
        store.create(_run(f"todo-{n:03d}", 1000.0 + n), [], _event())

    assert _pick_buffers(store) <= 6
    taken = store.claim(frozenset(ACTIVE_STATES), "w1", 10.0, now=2000.0)
    assert taken is not None and taken.id == "todo-000"


def test_each_set_of_claimable_states_has_a_statement_of_its_own_within_postgres_names() -> None:
    # PostgreSQL cuts a prepared statement's name at 63 bytes: two long lists of states
    # cut alike would run one claim for the other's states.
    every = [frozenset(RunState), frozenset(RunState) - {RunState.CANCELLED}, ACTIVE_STATES]
    calls = [pg_runs._claim_call(states) for states in every]

    assert len({call.name for call in calls}) == len(every)
    assert all(len(call.name) <= 63 for call in calls)
    assert pg_runs._claim_call(frozenset(ACTIVE_STATES)) is calls[2]  # one per set
