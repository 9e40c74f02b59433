"""A queued run's start rides on the claim that first takes it.

A run queued with ``execute=False`` keeps its ``workflow.started`` event prepared; on
PostgreSQL the claim's one statement leases the run, sets it running and appends that
event (under the chain's lock, after the run's row), so a worker commits nothing of its
own to start it. Both backends tell the same story in the ledger: created, started, the
steps, completed, one ``started`` per run. A claim that finds the run's lease held
starts nothing; a run queued without the event (older code) is still started, by the
engine, as before.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from wf_env import WfEnv

from aifr.audit import AuditEvent
from aifr.storage.postgres.database import PostgresDatabase
from aifr.storage.postgres.runs import PG_WORKFLOW_MIGRATIONS
from aifr.workflows import RunState, WorkflowBuilder
from aifr.workflows.ports import ACTIVE_STATES

SPEC = WorkflowBuilder("queued").step("s0", "ops.check", service="web").build()


def test_a_queued_run_is_started_once_and_in_order_on_either_backend(env: WfEnv) -> None:
    queued = env.engine.start(SPEC, {}, "agent", execute=False).run
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


@pytest.mark.pg
def test_the_claim_returns_the_run_running_with_its_started_record_appended(
    pg_env: WfEnv,
) -> None:
    queued = pg_env.engine.start(SPEC, {}, "agent", execute=False).run
    before = pg_env.kinds(queued.id)
    claimed = pg_env.runs.claim(frozenset(ACTIVE_STATES), "worker-a", 30.0, pg_env.clock[0])
    assert claimed is not None and claimed.id == queued.id
    assert claimed.state is RunState.RUNNING
    assert claimed.lease_owner == "worker-a"
    assert claimed.updated_at == pg_env.clock[0]
    assert pg_env.kinds(queued.id) == [*before, "workflow.started"]
    assert pg_env.runs.get(queued.id) == claimed  # what came back is what was written
    assert isinstance(pg_env.database, PostgresDatabase)
    with pg_env.database.connection() as conn:
        row = conn.execute("SELECT start_audit FROM wf_runs WHERE id = %s", (queued.id,))
        assert row.fetchone() == (None,)  # used once: a later claim appends nothing
    pg_env.runs.release(queued.id, "worker-a")
    again = pg_env.runs.claim(frozenset(ACTIVE_STATES), "worker-b", 30.0, pg_env.clock[0])
    assert again is not None and again.id == queued.id
    assert pg_env.kinds(queued.id).count("workflow.started") == 1
    assert pg_env.ledger.verify().ok


@pytest.mark.pg
def test_a_claim_that_finds_the_lease_held_starts_nothing(pg_env: WfEnv) -> None:
    queued = pg_env.engine.start(SPEC, {}, "agent", execute=False).run
    now = pg_env.clock[0]
    held = pg_env.runs.acquire(queued.id, "holder", 30.0, now)
    assert held is not None and held.state is RunState.PENDING
    assert pg_env.runs.claim(frozenset(ACTIVE_STATES), "other", 30.0, now) is None
    assert "workflow.started" not in pg_env.kinds(queued.id)
    assert pg_env.runs.get(queued.id).state is RunState.PENDING  # type: ignore[union-attr]
    assert pg_env.ledger.verify().ok


@pytest.mark.pg
def test_a_run_queued_without_its_start_event_is_started_by_the_engine(pg_env: WfEnv) -> None:
    # As older code queued runs: the claim leases it pending, the engine commits the start.
    run = pg_env.engine.start(SPEC, {}, "agent", execute=False).run
    template = pg_env.engine.view(run.id)
    old = template.run.evolve(id="run-queued-by-older-code")
    steps = [replace(s, run_id=old.id) for s in template.steps]
    created = AuditEvent(kind="workflow.created", principal="agent", run_id=old.id)
    pg_env.runs.create(old, steps, created)  # no start=
    pg_env.engine.recover(views=False)
    for run_id in (run.id, old.id):
        assert pg_env.engine.view(run_id).state is RunState.COMPLETED
        assert pg_env.kinds(run_id).count("workflow.started") == 1
    assert pg_env.ledger.verify().ok


@pytest.mark.pg
def test_a_schema_from_before_the_start_column_upgrades_in_place_and_runs_its_queue(
    pg_env: WfEnv,
) -> None:
    queued = pg_env.engine.start(SPEC, {}, "agent", execute=False).run
    database = pg_env.database
    assert isinstance(database, PostgresDatabase)
    with database.connection() as conn:  # the schema as migration 3 left it
        conn.execute("ALTER TABLE wf_runs DROP COLUMN start_audit")
        conn.execute("UPDATE schema_versions SET version = 3 WHERE component = 'workflows'")
    assert database.version("workflows") == 3
    assert database.migrate("workflows", PG_WORKFLOW_MIGRATIONS) == 4
    pg_env.engine.recover(views=False)
    assert pg_env.engine.view(queued.id).state is RunState.COMPLETED
    assert pg_env.kinds(queued.id).count("workflow.started") == 1
    assert pg_env.ledger.verify().ok
