"""Recovery's scan asks the database only for runs it could take.

An idle worker's turn scans the unfinished runs after its claim loop. A run another live
worker holds cannot be taken (its lease is neither free, expired, ours nor a dead
process's), and trying costs a write that waits for the holder's row lock; with many
engines polling a busy queue that was most of the database's statements. The scan now
skips such runs without asking, and still takes expired and dead owners' runs. Nor does
it lease queued runs the claim takes (free, or expired, in a state it claims): those
left after a turn's limit go to the next turn's claims, one statement each, not to the
scan's lease, start and reads.
"""

from __future__ import annotations

import inspect
import os
import socket
import threading
import time

import pytest
from wf_env import WfEnv

from aifr.workflows import RunState, Worker, WorkflowBuilder, WorkflowSpec
from aifr.workflows.recovery import Recovery

TURN_LIMIT = inspect.signature(Recovery.run_once).parameters["limit"].default


def _spec() -> WorkflowSpec:
    return WorkflowBuilder("scanned").step("a", "ops.check", service="web").build()


def _counting_acquire(env: WfEnv, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    asked: list[str] = []
    acquire = env.runs.acquire

    def counted(run_id: str, owner: str, ttl_s: float, now: float) -> object:
        asked.append(run_id)
        return acquire(run_id, owner, ttl_s, now)

    monkeypatch.setattr(env.runs, "acquire", counted)
    return asked


def test_runs_held_by_live_owners_are_skipped_without_a_write(
    env: WfEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = f"{socket.gethostname()}:{os.getppid()}:live"
    held = [env.engine.start(_spec(), {}, "agent", execute=False).run.id for _ in range(3)]
    for run_id in held:
        assert env.runs.acquire(run_id, live, 60, time.time()) is not None
    asked = _counting_acquire(env, monkeypatch)

    assert env.new_engine().recover() == []

    assert asked == []
    assert {env.runs.get(r).lease_owner for r in held} == {live}  # type: ignore[union-attr]


def test_expired_and_dead_owners_runs_are_still_taken_by_the_scan(
    env: WfEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    expired = env.engine.start(_spec(), {}, "agent", execute=False).run.id
    dead = env.engine.start(_spec(), {}, "agent", execute=False).run.id
    assert env.runs.acquire(expired, "remote-host:1:x", 0.01, time.time() - 60) is not None
    gone = f"{socket.gethostname()}:{2**22 + 12345}:gone"
    assert env.runs.acquire(dead, gone, 60, time.time()) is not None
    asked = _counting_acquire(env, monkeypatch)

    driven = env.new_engine().recover()

    assert {v.run.id for v in driven} == {expired, dead}
    assert all(v.state is RunState.COMPLETED for v in driven)
    assert dead in asked  # the claim takes the expired one; the scan the dead owner's


def test_queued_runs_past_a_turns_limit_are_left_to_the_next_turns_claims(
    env: WfEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued = [env.engine.start(_spec(), {}, "agent", execute=False).run.id for _ in range(5)]
    asked = _counting_acquire(env, monkeypatch)
    engine = env.new_engine()

    first = engine.recovery.run_once(limit=2)

    assert [v.run.id for v in first] == queued[:2]  # claimed in queue order
    assert asked == []  # the scan leased none of the three left: the claim's work
    for run_id in queued[2:]:
        left = env.runs.get(run_id)
        assert left is not None
        assert (left.state, left.lease_owner) == (RunState.PENDING, None)
    second = engine.recovery.run_once(limit=2)
    third = engine.recovery.run_once(limit=2)
    assert [v.run.id for v in [*second, *third]] == queued[2:]
    assert asked == []
    assert all(v.state is RunState.COMPLETED for v in [*first, *second, *third])


def test_a_worker_drains_a_backlog_past_its_turn_limit_without_waiting_a_poll(env: WfEnv) -> None:
    spec = WorkflowBuilder("one").step("a", "test.noop").build()
    queued = [
        env.engine.start(spec, {}, "agent", execute=False).run.id for _ in range(TURN_LIMIT + 20)
    ]
    worker = Worker(env.new_engine(), poll_s=600.0)  # one wait would outlast the test
    loop = threading.Thread(target=worker.run)
    loop.start()
    try:
        deadline = time.monotonic() + 30
        while (last := env.runs.get(queued[-1])) is None or last.state is not RunState.COMPLETED:
            assert time.monotonic() < deadline, "the worker waited between turns of a backlog"
            time.sleep(0.01)
    finally:
        worker.stop()
        loop.join(30)
    assert not loop.is_alive()
    states = {env.runs.get(r).state for r in queued}  # type: ignore[union-attr]
    assert states == {RunState.COMPLETED}
    assert env.ledger.verify().ok
