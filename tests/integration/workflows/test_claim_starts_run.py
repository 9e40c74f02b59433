"""A queued run's start rides on the claim that first takes it, on both backends.

A run queued with ``execute=False`` keeps its ``workflow.started`` event: prepared for
the chain on PostgreSQL (``wf_runs.start_audit``), as JSON on SQLite
(``wf_runs.start_event``). The claim leases the run, sets it running and appends that
event in its own transaction (after the run's row, the chain last), so a worker commits
nothing of its own to start it. The ledger tells the same story either way: created,
started, the steps, completed, one ``started`` per run. On PostgreSQL the claim that
starts a run does not read its steps back: nothing can have written them since they
were queued, and the worker builds them as the engine queued them. A claim that finds
the run's lease held starts nothing; a run queued without the event (older code) is still
started, by the engine, as before; a database from before the column upgrades in place.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from wf_env import WfEnv

from aifr.audit import AuditEvent
from aifr.errors import AifrError
from aifr.storage.postgres.database import PostgresDatabase
from aifr.storage.postgres.runs import PG_WORKFLOW_MIGRATIONS
from aifr.storage.sqlite.runs import WORKFLOW_MIGRATIONS
from aifr.workflows import RunState, WorkflowBuilder
from aifr.workflows.ports import ACTIVE_STATES
from aifr.workflows.state import queued_steps

SPEC = WorkflowBuilder("queued").step("s0", "ops.check", service="web").build()


def _kept_start(env: WfEnv, run_id: str) -> object:
    """The start event the run's row still keeps (``None`` once a claim used it)."""
    if isinstance(env.database, PostgresDatabase):
        with env.database.connection() as conn:
            row = conn.execute("SELECT start_audit FROM wf_runs WHERE id = %s", (run_id,))
            return row.fetchone()[0]  # type: ignore[index]
    row = env.database.connect().execute("SELECT start_event FROM wf_runs WHERE id = ?", (run_id,))
    return row.fetchone()[0]


def test_a_queued_run_is_started_once_and_in_order(env: WfEnv) -> None:
    queued = env.engine.start(SPEC, {}, "agent", execute=False).run
    assert _kept_start(env, queued.id) is not None
    env.engine.recover(views=False)
    assert env.engine.view(queued.id).state is RunState.COMPLETED
    assert env.kinds(queued.id) == [
        "workflow.created",
        "workflow.started",
        "invocation",
        "workflow.completed",
    ]
    started = next(
        r
        for r in env.ledger.records()
        if r.event.run_id == queued.id and r.event.kind == "workflow.started"
    )
    assert started.event.principal == "agent"
    assert started.event.details == {
        "state": "running",
        "workflow": "queued",
        "workflow_version": SPEC.version,
    }
    assert env.ledger.verify().ok


def test_the_claim_returns_the_run_running_with_its_started_record_appended(
    env: WfEnv,
) -> None:
    queued = env.engine.start(SPEC, {}, "agent", execute=False).run
    before = env.kinds(queued.id)
    now = env.clock[0]
    claimed = env.runs.claim(frozenset(ACTIVE_STATES), "worker-a", 30.0, now)
    assert claimed is not None and claimed.id == queued.id
    assert claimed.state is RunState.RUNNING
    assert claimed.lease_owner == "worker-a"
    assert claimed.updated_at == now
    assert env.kinds(queued.id) == [*before, "workflow.started"]
    assert env.runs.get(queued.id) == claimed  # what came back is what was written
    assert _kept_start(env, queued.id) is None  # used once: a later claim appends nothing
    env.runs.release(queued.id, "worker-a")
    again = env.runs.claim(frozenset(ACTIVE_STATES), "worker-b", 30.0, now)
    assert again is not None and again.id == queued.id
    assert env.kinds(queued.id).count("workflow.started") == 1
    assert env.ledger.verify().ok


def test_a_claim_that_finds_the_lease_held_starts_nothing(env: WfEnv) -> None:
    queued = env.engine.start(SPEC, {}, "agent", execute=False).run
    now = env.clock[0]
    held = env.runs.acquire(queued.id, "holder", 30.0, now)
    assert held is not None and held.state is RunState.PENDING
    assert env.runs.claim(frozenset(ACTIVE_STATES), "other", 30.0, now) is None
    assert "workflow.started" not in env.kinds(queued.id)
    assert env.runs.get(queued.id).state is RunState.PENDING  # type: ignore[union-attr]
    assert _kept_start(env, queued.id) is not None
    assert env.ledger.verify().ok


def test_a_run_queued_without_its_start_event_is_started_by_the_engine(env: WfEnv) -> None:
    # As older code queued runs: the claim leases it pending, the engine commits the start.
    run = env.engine.start(SPEC, {}, "agent", execute=False).run
    template = env.engine.view(run.id)
    old = template.run.evolve(id="run-queued-by-older-code")
    steps = [replace(s, run_id=old.id) for s in template.steps]
    created = AuditEvent(kind="workflow.created", principal="agent", run_id=old.id)
    env.runs.create(old, steps, created)  # no start=
    assert _kept_start(env, old.id) is None
    env.engine.recover(views=False)
    for run_id in (run.id, old.id):
        assert env.engine.view(run_id).state is RunState.COMPLETED
        assert env.kinds(run_id).count("workflow.started") == 1
    assert env.ledger.verify().ok


def test_a_queued_start_event_is_redacted_before_it_waits_in_the_runs_row(env: WfEnv) -> None:
    # The store keeps the event until a claim: what it keeps is already redacted (and a
    # bad event would fail at queueing, not at the claim), on both backends.
    key = "AKIAQ3EGRWKZ5XVN7TUP"  # an AWS access key id's shape: the detector's to find
    run = env.engine.start(SPEC, {}, "agent", execute=False).run
    template = env.engine.view(run.id)
    queued = template.run.evolve(id="run-with-a-secret-in-its-start")
    steps = [replace(s, run_id=queued.id) for s in template.steps]
    created = AuditEvent(kind="workflow.created", principal="agent", run_id=queued.id)
    start = AuditEvent(
        kind="workflow.started", principal="agent", run_id=queued.id, details={"note": key}
    )
    env.runs.create(queued, steps, created, start=start)
    kept = str(_kept_start(env, queued.id))
    assert key not in kept and "REDACTED" in kept
    env.engine.recover(views=False)
    started = [
        r
        for r in env.ledger.records()
        if r.event.run_id == queued.id and r.event.kind == "workflow.started"
    ]
    assert len(started) == 1 and key not in str(started[0].event.details)
    assert env.ledger.verify().ok


def test_a_database_from_before_the_start_column_upgrades_in_place_and_runs_its_queue(
    env: WfEnv,
) -> None:
    queued = env.engine.start(SPEC, {}, "agent", execute=False).run
    database = env.database
    if isinstance(database, PostgresDatabase):
        with database.connection() as conn:  # the schema as migration 3 left it
            conn.execute("ALTER TABLE wf_runs DROP COLUMN start_audit")
            conn.execute("DROP TABLE wf_workers")
            conn.execute("UPDATE schema_versions SET version = 3 WHERE component = 'workflows'")
        assert (
            database.migrate("workflows", PG_WORKFLOW_MIGRATIONS)
            == PG_WORKFLOW_MIGRATIONS[-1].version
        )
    else:
        conn = database.connect()  # the file as migration 3 left it
        conn.execute("ALTER TABLE wf_runs DROP COLUMN start_event")
        conn.execute("DROP TABLE wf_workers")
        conn.execute("UPDATE schema_versions SET version = 3 WHERE component = 'workflows'")
        assert database.version("workflows") == 3
        assert database.migrate("workflows", WORKFLOW_MIGRATIONS) == 5
    env.engine.recover(views=False)
    assert env.engine.view(queued.id).state is RunState.COMPLETED
    assert env.kinds(queued.id).count("workflow.started") == 1
    assert env.ledger.verify().ok


def test_a_queued_run_costs_a_sqlite_worker_no_commit_of_its_own_to_start(
    sqlite_env: WfEnv,
) -> None:
    # Counted on the group commit: the claim (which starts the run), the step that ends
    # the run, and the claim that finds nothing; a `started` commit of its own was a
    # fourth before.
    queued = sqlite_env.engine.start(SPEC, {}, "agent", execute=False).run
    group = sqlite_env.runs.group
    before = group.commits
    sqlite_env.engine.recover(views=False)
    assert sqlite_env.engine.view(queued.id).state is RunState.COMPLETED
    assert group.commits - before == 3


def test_a_run_the_claim_starts_has_the_steps_it_was_queued_with(env: WfEnv) -> None:
    """What ``queued_steps`` builds is, field for field, what ``start`` stored."""
    spec = (
        WorkflowBuilder("shapes")
        .step("check", "ops.check", service="web", retry={"count": 2})
        .step("noop", "test.noop", n=2, on_failure="halt")
        .step("again", "ops.check", service="db", timeout_s=5)
        .build()
    )
    queued = env.engine.start(spec, {}, "agent", execute=False).run
    assert env.runs.steps(queued.id) == queued_steps(queued.id, spec, queued.fingerprints)
    assert all(step.fingerprint for step in env.runs.steps(queued.id))


def test_the_claim_that_starts_a_run_builds_its_steps_instead_of_reading_them(
    pg_env: WfEnv,
) -> None:
    """PostgreSQL: a started run comes back without its step rows; a taken-over one with them.

    A row changed behind the store's back shows which: no aifr code writes a queued run's
    steps (a run is written under its lease, and a queued one has none), so the claim
    that starts the run may build them from its definition.
    """
    database = pg_env.database
    assert isinstance(database, PostgresDatabase)
    queued = pg_env.engine.start(SPEC, {}, "agent", execute=False).run
    with database.connection() as conn:
        conn.execute("UPDATE wf_steps SET capability = 'changed' WHERE run_id = %s", (queued.id,))
    claimed = pg_env.runs.claim(ACTIVE_STATES, "w1", 0.01, pg_env.clock[0])
    assert claimed is not None and claimed.state is RunState.RUNNING
    assert [s.capability for s in pg_env.runs.steps(claimed.id)] == ["ops.check"]

    # Its lease expired, the run is claimed again: running already, its steps are read.
    again = pg_env.runs.claim(ACTIVE_STATES, "w2", 30.0, pg_env.clock[0] + 1)
    assert again is not None and again.id == queued.id
    assert [s.capability for s in pg_env.runs.steps(again.id)] == ["changed"]


AWKWARD = 'naïve café — 東京 🚀 "quoted" \\ back\\slash \n\t\x01 \u2028'


def test_a_start_event_of_awkward_text_is_appended_by_the_claim_as_the_ledger_chains_it(
    env: WfEnv,
) -> None:
    # PostgreSQL's claim hashes the start on the server, in its own function: byte for
    # byte the ledger's hash, whatever the event's text (verify recomputes each one).
    run = env.engine.start(SPEC, {}, "agent", execute=False).run
    queued = env.engine.view(run.id).run.evolve(id="run-awkward")
    steps = [replace(s, run_id=queued.id) for s in env.runs.steps(run.id)]
    created = AuditEvent(kind="workflow.created", principal=AWKWARD, run_id=queued.id)
    start = AuditEvent(
        kind="workflow.started",
        principal=AWKWARD,
        run_id=queued.id,
        details={AWKWARD: [AWKWARD, 2.5, None, True]},
    )
    env.runs.create(queued, steps, created, start=start)
    env.engine.recover(views=False)
    started = [
        r
        for r in env.ledger.records()
        if r.event.run_id == queued.id and r.event.kind == "workflow.started"
    ]
    assert [r.event.principal for r in started] == [AWKWARD]
    assert started[0].event.details == {AWKWARD: [AWKWARD, 2.5, None, True]}
    assert env.engine.view(queued.id).state is RunState.COMPLETED
    assert env.ledger.verify().ok


def test_a_kept_start_whose_record_id_would_need_escapes_is_refused_and_the_run_stays_queued(
    pg_env: WfEnv,
) -> None:
    # The record's id is made on the server from the random part the client prepared:
    # a part that is not plain (a row written behind the store's back) fails the claim
    # whole, with nothing appended and the run still queued with its start.
    database = pg_env.database
    assert isinstance(database, PostgresDatabase)
    queued = pg_env.engine.start(SPEC, {}, "agent", execute=False).run
    with database.connection() as conn:
        conn.execute("UPDATE wf_runs SET start_audit[1] = 'not\"hex' WHERE id = %s", (queued.id,))
    records = len(list(pg_env.ledger.records()))

    with pytest.raises(AifrError) as raised:
        pg_env.runs.claim(ACTIVE_STATES, "w1", 30.0, pg_env.clock[0])

    assert "claiming a run" in raised.value.message and "escapes" in raised.value.message
    assert len(list(pg_env.ledger.records())) == records
    run = pg_env.runs.get(queued.id)
    assert run is not None and run.state is RunState.PENDING and run.lease_owner is None
    assert _kept_start(pg_env, queued.id) is not None
    assert pg_env.ledger.verify().ok
