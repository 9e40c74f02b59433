"""A worker whose lease was taken mid-step writes neither the step's failure nor its audit record."""

from __future__ import annotations

import threading
import time

from wf_env import WfEnv

from aifr.capabilities import capability
from aifr.storage.postgres.runs import PostgresRunStore
from aifr.storage.sqlite.runs import SqliteRunStore
from aifr.workflows import RunState, StepKey, StepState, WorkflowBuilder


def test_a_late_workers_failed_step_leaves_no_audit_record_and_the_run_to_its_new_holder(
    env: WfEnv,
) -> None:
    entered, go = threading.Event(), threading.Event()

    @capability("test.stall", operation="READ", risk="LOW")
    def stall() -> dict[str, bool]:
        """Wait until told, then fail."""
        entered.set()
        go.wait(10)
        raise RuntimeError("gave up after the pause")

    env.registry.register(stall)
    spec = WorkflowBuilder("stalls").step("a", "test.stall").build()
    created = env.engine.start(spec, {}, "agent", execute=False)
    run_id = created.run.id
    late = threading.Thread(target=env.engine.resume, args=(run_id,))
    late.start()
    assert entered.wait(10)
    # Another process's store: the lease lapsed (its clock says so) and it takes the run.
    other = (
        SqliteRunStore(env.database, env.ledger)  # type: ignore[arg-type]
        if isinstance(env.runs, SqliteRunStore)
        else PostgresRunStore(env.database, env.ledger)  # type: ignore[arg-type]
    )
    assert other.acquire(run_id, "thief:1:x", 60, now=time.time() + 3600) is not None
    go.set()
    late.join(10)
    assert not late.is_alive()

    key = str(StepKey(run_id, "a", 1))
    late_records = [
        r for r in env.ledger.records() if r.event.details.get("idempotency_key") == key
    ]
    assert late_records == []  # the failed attempt's record was refused by the database
    assert env.runs.step(run_id, "a").state is StepState.PENDING  # type: ignore[union-attr]
    run = env.runs.get(run_id)
    assert run is not None
    assert run.state is RunState.RUNNING
    assert run.lease_owner == "thief:1:x"
    assert env.ledger.verify().ok
