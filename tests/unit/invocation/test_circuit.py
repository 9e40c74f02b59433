"""Circuit breakers: open after N failures, fail fast, one trial call after the cooldown."""

from __future__ import annotations

import pytest

from aifr.errors import CircuitOpenError, ErrorCode
from aifr.invocation import CircuitBreakers, CircuitRecord, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class ListStore:
    def __init__(self, records: list[CircuitRecord] | None = None) -> None:
        self.saved: dict[str, CircuitRecord] = {r.capability_id: r for r in records or []}

    def save(self, record: CircuitRecord) -> None:
        self.saved[record.capability_id] = record

    def load(self) -> list[CircuitRecord]:
        return list(self.saved.values())


def test_the_circuit_opens_after_the_threshold_of_consecutive_failures() -> None:
    breakers = CircuitBreakers(failure_threshold=3, cooldown_s=10, clock=Clock())
    for _ in range(2):
        breakers.before_call("x")
        assert breakers.record_failure("x") is CircuitState.CLOSED
    assert breakers.record_failure("x") is CircuitState.OPEN
    with pytest.raises(CircuitOpenError) as caught:
        breakers.before_call("x")
    assert caught.value.code is ErrorCode.CIRCUIT_OPEN
    assert caught.value.details["failures"] == 3


def test_a_success_resets_the_count() -> None:
    breakers = CircuitBreakers(failure_threshold=2, clock=Clock())
    breakers.record_failure("x")
    breakers.record_success("x")
    breakers.record_failure("x")
    assert breakers.state("x") is CircuitState.CLOSED


def test_after_the_cooldown_exactly_one_trial_call_is_admitted() -> None:
    clock = Clock()
    breakers = CircuitBreakers(failure_threshold=1, cooldown_s=10, clock=clock)
    breakers.record_failure("x")
    clock.now += 10
    assert breakers.state("x") is CircuitState.HALF_OPEN
    assert breakers.before_call("x") is CircuitState.HALF_OPEN
    with pytest.raises(CircuitOpenError):
        breakers.before_call("x")
    assert breakers.record_success("x") is CircuitState.CLOSED
    assert breakers.before_call("x") is CircuitState.CLOSED


def test_a_failed_trial_reopens_for_a_new_cooldown() -> None:
    clock = Clock()
    breakers = CircuitBreakers(failure_threshold=1, cooldown_s=10, clock=clock)
    breakers.record_failure("x")
    clock.now += 10
    breakers.before_call("x")
    assert breakers.record_failure("x") is CircuitState.OPEN
    clock.now += 5
    with pytest.raises(CircuitOpenError):
        breakers.before_call("x")


def test_a_trial_without_a_verdict_lets_another_trial_through() -> None:
    clock = Clock()
    breakers = CircuitBreakers(failure_threshold=1, cooldown_s=1, clock=clock)
    breakers.record_failure("x")
    clock.now += 1
    breakers.before_call("x")
    breakers.release_trial("x")
    assert breakers.before_call("x") is CircuitState.HALF_OPEN


def test_circuits_are_per_capability() -> None:
    breakers = CircuitBreakers(failure_threshold=1, clock=Clock())
    breakers.record_failure("x")
    assert breakers.before_call("y") is CircuitState.CLOSED


def test_state_changes_are_recorded_and_reloaded_by_a_new_process() -> None:
    clock = Clock()
    store = ListStore()
    breakers = CircuitBreakers(failure_threshold=2, cooldown_s=60, store=store, clock=clock)
    breakers.record_failure("x")
    breakers.record_failure("x")
    assert store.saved["x"].state == "open"
    reloaded = CircuitBreakers(failure_threshold=2, cooldown_s=60, store=store, clock=clock)
    with pytest.raises(CircuitOpenError):
        reloaded.before_call("x")
    assert reloaded.failures("x") == 2


def test_a_trial_interrupted_by_a_crash_reloads_as_open() -> None:
    clock = Clock()
    store = ListStore(
        [CircuitRecord("x", state="half_open", failures=3, opened_at=clock.now, updated_at=0)]
    )
    breakers = CircuitBreakers(failure_threshold=3, cooldown_s=60, store=store, clock=clock)
    assert breakers.state("x") is CircuitState.OPEN
