"""Leases: the heartbeat keeps a busy run, a dead owner's run is taken over, a stale one stops."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from wf_env import WfEnv, build_wf_env

from aifr.capabilities import CallInfo, CapabilityRegistry, capability
from aifr.errors import ErrorCode, WorkflowError
from aifr.workflows import (
    Heartbeat,
    RunState,
    StepState,
    WorkflowBuilder,
    WorkflowSpec,
    is_owner_gone,
    new_owner_id,
)


def _spec() -> WorkflowSpec:
    return WorkflowBuilder("leased").step("a", "test.noop").build()


def test_the_heartbeat_renews_the_lease_of_a_run_while_it_is_held(env: WfEnv) -> None:
    created = env.engine.start(_spec(), {}, "agent", execute=False)
    owner = "me:1:beat"
    taken = env.runs.acquire(created.run.id, owner, 0.3, time.time())
    assert taken is not None
    heartbeat = Heartbeat(env.runs, owner, 0.3)

    with heartbeat.holding(created.run.id):
        first = taken.lease_expires_at
        deadline = time.monotonic() + 5
        while env.runs.get(created.run.id).lease_expires_at == first:
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.02)
        assert heartbeat.held() == [created.run.id]

    assert heartbeat.held() == []


def test_a_lease_held_by_a_live_owner_is_not_taken(env: WfEnv) -> None:
    created = env.engine.start(_spec(), {}, "agent", execute=False)
    live = f"{socket.gethostname()}:{os.getppid()}:live"
    assert env.runs.acquire(created.run.id, live, 60, time.time()) is not None

    assert env.new_engine().recover() == []
    with pytest.raises(WorkflowError) as busy:
        env.new_engine().resume(created.run.id)
    assert busy.value.code is ErrorCode.WORKFLOW_BAD_STATE


def test_a_dead_local_owner_is_recognised_and_a_remote_one_is_not() -> None:
    assert not is_owner_gone(new_owner_id())
    assert not is_owner_gone("some-other-host:1:abcd")
    assert is_owner_gone(f"{socket.gethostname()}:{2**22 + 12345}:gone")


def test_a_worker_whose_lease_was_taken_over_stops_without_writing(env: WfEnv) -> None:
    created = env.engine.start(_spec(), {}, "agent", execute=False)
    run = env.runs.get(created.run.id)
    assert env.runs.acquire(created.run.id, "thief:1:x", 60, time.time()) is not None

    with pytest.raises(WorkflowError) as lost:
        env.runs.save(run.evolve(state=RunState.RUNNING), owner="slow:2:y")

    assert lost.value.code is ErrorCode.WORKFLOW_LEASE_LOST
    assert env.runs.get(created.run.id).state is RunState.PENDING


def test_the_last_steps_commit_also_ends_the_run_and_releases_its_lease(sqlite_env: WfEnv) -> None:
    spec = WorkflowBuilder("two").step("a", "test.noop").step("b", "test.noop").build()
    jobs = sqlite_env.runs.group.jobs

    view = sqlite_env.engine.start(spec, {}, "agent")

    assert view.state is RunState.COMPLETED
    assert sqlite_env.runs.group.jobs - jobs == 3  # create, step a, step b with the run's end
    stored = sqlite_env.runs.get(view.run.id)
    assert stored.state is RunState.COMPLETED
    assert (stored.lease_owner, stored.lease_expires_at) == (None, None)
    assert sqlite_env.kinds(view.run.id) == [
        "workflow.started",
        "invocation",
        "invocation",
        "workflow.completed",
    ]
    assert sqlite_env.ledger.verify().ok


def test_a_step_finishing_after_its_lease_was_taken_is_refused_with_its_audit_record(
    tmp_path: Path,
) -> None:
    stolen: list[str] = []

    @capability("test.slow", operation="READ", risk="LOW")
    def slow(info: CallInfo) -> dict[str, bool]:
        """While this runs, another worker takes the run (our lease looked expired to it)."""
        assert info.run_id is not None
        taken = runs.acquire(info.run_id, "thief:1:x", 60, time.time() + 3600)
        stolen.append(info.run_id if taken is not None else "")
        return {"ok": True}

    env = build_wf_env(tmp_path, registry=CapabilityRegistry([slow]))
    runs = env.runs
    try:
        view = env.engine.start(WorkflowBuilder("one").step("s", "test.slow").build(), {}, "agent")

        assert stolen == [view.run.id]
        stored = env.runs.get(view.run.id)
        assert stored.state is RunState.RUNNING
        assert stored.lease_owner == "thief:1:x"
        # Fencing: the thief took the lease with a new epoch, so the database refused the
        # late result and the audit record in its transaction; the thief re-runs the step
        # with the same idempotency key.
        assert env.runs.step(view.run.id, "s").state is StepState.PENDING
        assert env.kinds(view.run.id) == ["workflow.started"]
        assert env.ledger.verify().ok
    finally:
        env.close()


@pytest.mark.parametrize(("ttl_s", "reads"), [(30.0, 0), (0.5, 2)])
def test_a_steps_stored_result_is_read_only_when_the_lease_is_not_certainly_held(
    sqlite_env: WfEnv, ttl_s: float, reads: int
) -> None:
    """A valid lease means nobody else can have recorded the step: the replay read is skipped."""
    statements: list[str] = []
    sqlite_env.database.connect().set_trace_callback(statements.append)
    spec = WorkflowBuilder("two").step("a", "test.noop").step("b", "test.noop").build()

    view = sqlite_env.new_engine(lease_ttl_s=ttl_s).start(spec, {}, "agent")

    sqlite_env.database.connect().set_trace_callback(None)
    assert view.state is RunState.COMPLETED
    assert sum("request_digest AS digest" in s for s in statements) == reads


def test_recovering_without_the_queue_resumes_an_interrupted_run_and_leaves_a_queued_one(
    env: WfEnv,
) -> None:
    """What ``aifr run`` does first: it finishes what a crash cut short, not the workers' queue."""
    interrupted = env.engine.start(_spec(), {}, "agent", execute=False)
    queued = env.engine.start(_spec(), {}, "agent", execute=False)
    claimed = env.runs.claim(
        frozenset({RunState.PENDING}), "elsewhere:1:gone", 0.05, time.time()
    )  # a worker on another machine started the older run, then vanished
    assert claimed is not None and claimed.id == interrupted.run.id
    time.sleep(0.1)  # its lease expires

    env.new_engine().recover(queued=False)
    after_run = {r: env.runs.get(r).state for r in (interrupted.run.id, queued.run.id)}
    env.new_engine().recover()

    assert after_run == {interrupted.run.id: RunState.COMPLETED, queued.run.id: RunState.PENDING}
    assert env.runs.get(queued.run.id).state is RunState.COMPLETED
