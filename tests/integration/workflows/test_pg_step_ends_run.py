"""PostgreSQL: a run's last step and the run's end in one statement (``aifr_step_ends_run``).

What the lone writer's transaction did around a savepoint, the function does in order on
the server: the step's fenced result (refused whole with ``AF001``), the run's end only
if the writer still holds the lease at its epoch, then the records under the chain's
lock. These tests call it on real rows of a queued run and check each outcome: both
records and the run ended; the step alone when the run's end is no longer the writer's;
nothing at all when the step itself is refused. The chain verifies after each.
"""

from __future__ import annotations

import pytest
from wf_env import WfEnv

from aifr.audit import AuditEvent
from aifr.errors import ErrorCode, WorkflowError
from aifr.storage.postgres.audit import append_fields
from aifr.storage.postgres.database import PostgresDatabase, translate_pg_errors
from aifr.storage.postgres.step_results import _STEP_ENDS_RUN
from aifr.workflows import RunState, WorkflowBuilder

pytestmark = pytest.mark.pg


def _queued_run(env: WfEnv) -> tuple[str, int]:
    spec = WorkflowBuilder("last").step("s0", "ops.check", service="web").build()
    run_id = env.engine.start(spec, {}, "agent", execute=False).run.id
    assert isinstance(env.database, PostgresDatabase)
    with env.database.connection() as conn:
        row = conn.execute(
            "UPDATE wf_runs SET lease_owner = 'me', lease_epoch = lease_epoch + 1, "
            "state = 'running' WHERE id = %s RETURNING lease_epoch",
            (run_id,),
        ).fetchone()
    assert row is not None
    return run_id, row[0]


def _end(env: WfEnv, run_id: str, *, fence: int, run_fence: int, owner: str) -> list[tuple]:
    events = [
        AuditEvent(kind="invocation", principal="agent", run_id=run_id, outcome="ok"),
        AuditEvent(kind="workflow.completed", principal="agent", run_id=run_id),
    ]
    prepared = [env.ledger.prepare(e) for e in events]
    assert isinstance(env.database, PostgresDatabase)
    with translate_pg_errors("ending a run"), env.database.connection() as conn:
        return _STEP_ENDS_RUN.rows(
            conn,
            (
                "1",
                '{"ok": true}',
                "d" * 64,
                "{}",
                "1700000000.5",
                run_id,
                "s0",
                str(fence),
                f"run {run_id}: refused",
                RunState.COMPLETED.value,
                "{}",
                None,
                None,
                "0",
                "1700000000.5",
                owner,
                str(run_fence),
                append_fields(prepared),
            ),
        )


def _rows(env: WfEnv, run_id: str) -> tuple[tuple, tuple]:
    assert isinstance(env.database, PostgresDatabase)
    with env.database.connection() as conn:
        run = conn.execute(
            "SELECT state, lease_owner, lease_expires_at FROM wf_runs WHERE id = %s", (run_id,)
        ).fetchone()
        step = conn.execute(
            "SELECT state, audit_id FROM wf_steps WHERE run_id = %s AND step_id = 's0'", (run_id,)
        ).fetchone()
    assert run is not None and step is not None
    return run, step


def test_the_step_and_the_run_end_are_written_with_both_records(pg_env: WfEnv) -> None:
    run_id, epoch = _queued_run(pg_env)
    rows = _end(pg_env, run_id, fence=epoch, run_fence=epoch, owner="me")
    assert len(rows) == 2
    run, step = _rows(pg_env, run_id)
    assert run == ("completed", None, None)
    assert step == ("completed", rows[0][1])  # the step row names the step's own record
    assert pg_env.kinds(run_id)[-2:] == ["invocation", "workflow.completed"]
    assert pg_env.ledger.verify().ok


def test_a_run_end_no_longer_ours_leaves_the_step_and_its_record_alone(pg_env: WfEnv) -> None:
    run_id, epoch = _queued_run(pg_env)
    rows = _end(pg_env, run_id, fence=epoch, run_fence=epoch, owner="someone-else")
    assert len(rows) == 1
    run, step = _rows(pg_env, run_id)
    assert run[:2] == ("running", "me")  # the run's end was not written
    assert step == ("completed", rows[0][1])
    assert pg_env.kinds(run_id)[-1] == "invocation"
    assert pg_env.ledger.verify().ok


def test_a_refused_step_writes_nothing(pg_env: WfEnv) -> None:
    run_id, epoch = _queued_run(pg_env)
    before = len(list(pg_env.ledger.records()))
    with pytest.raises(WorkflowError) as caught:
        _end(pg_env, run_id, fence=epoch - 1, run_fence=epoch - 1, owner="me")
    assert caught.value.code is ErrorCode.WORKFLOW_LEASE_LOST
    run, step = _rows(pg_env, run_id)
    assert run[:2] == ("running", "me")
    assert step[0] != "completed"
    assert len(list(pg_env.ledger.records())) == before
    assert pg_env.ledger.verify().ok
