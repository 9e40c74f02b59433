"""The circuit breaker inside the runtime: fail fast, trial call, state everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from invocation_env import Env, build_env

from aifr.errors import ErrorCode
from aifr.storage.sqlite.circuits import SqliteCircuitStore


@pytest.fixture
def fast(tmp_path: Path) -> Iterator[Env]:
    built = build_env(tmp_path, threshold=2, cooldown_s=0.0)
    yield built
    built.runtime.close()


def test_after_n_failures_calls_fail_fast_without_running(env: Env) -> None:
    env.calls.fail_next.extend([True] * 10)
    codes = [env.runtime.invoke("demo.flaky", {}, "alice").error_code for _ in range(5)]
    assert codes == [ErrorCode.EXECUTION_FAILED] * 3 + [ErrorCode.CIRCUIT_OPEN] * 2
    assert len(env.calls.fail_next) == 7
    result = env.runtime.invoke("demo.flaky", {}, "alice")
    assert result.circuit == "open"
    assert env.audit_rows()[-1]["details"]["circuit"] == "open"


def test_state_is_recorded_in_the_state_database(env: Env) -> None:
    env.calls.fail_next.extend([True] * 3)
    for _ in range(3):
        env.runtime.invoke("demo.flaky", {}, "alice")
    records = {r.capability_id: r for r in SqliteCircuitStore(env.database).load()}
    assert records["demo.flaky"].state == "open"
    assert records["demo.flaky"].failures == 3


def test_after_the_cooldown_a_successful_trial_closes_the_circuit(fast: Env) -> None:
    fast.calls.fail_next.extend([True, True])
    for _ in range(2):
        fast.runtime.invoke("demo.flaky", {}, "alice")
    assert fast.runtime.circuits.state("demo.flaky").value == "half_open"
    trial = fast.runtime.invoke("demo.flaky", {}, "alice")
    assert trial.ok and trial.circuit == "closed"


def test_a_failed_trial_opens_the_circuit_again(fast: Env) -> None:
    fast.calls.fail_next.extend([True, True, True])
    for _ in range(2):
        fast.runtime.invoke("demo.flaky", {}, "alice")
    trial = fast.runtime.invoke("demo.flaky", {}, "alice")
    assert trial.error_code is ErrorCode.EXECUTION_FAILED and trial.circuit == "open"


def test_denials_and_bad_inputs_never_trip_the_circuit(env: Env) -> None:
    for _ in range(5):
        env.runtime.invoke("demo.forbidden", {}, "alice")
        env.runtime.invoke("demo.echo@1", {}, "alice")
    assert env.runtime.circuits.failures("demo.forbidden") == 0
    assert env.runtime.circuits.failures("demo.echo") == 0
