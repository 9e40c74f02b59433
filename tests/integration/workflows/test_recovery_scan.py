"""Recovery's scan asks the database only for runs it could take.

An idle worker's turn scans the unfinished runs after its claim loop. A run another live
worker holds cannot be taken (its lease is neither free, expired, ours nor a dead
process's), and trying costs a write that waits for the holder's row lock; with many
engines polling a busy queue that was most of the database's statements. The scan now
skips such runs without asking, and still takes expired and dead owners' runs.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
from wf_env import WfEnv

from aifr.workflows import RunState, WorkflowBuilder, WorkflowSpec


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
