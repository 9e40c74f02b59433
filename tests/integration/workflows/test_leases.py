"""Leases: the heartbeat keeps a busy run, a dead owner's run is taken over, a stale one stops."""

from __future__ import annotations

import os
import socket
import time

import pytest
from wf_env import WfEnv

from aifr.errors import ErrorCode, WorkflowError
from aifr.workflows import (
    Heartbeat,
    RunState,
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
