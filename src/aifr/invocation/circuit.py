"""Circuit breakers, one per capability id.

After ``failure_threshold`` consecutive execution failures (handler error, timeout,
invalid output) the circuit opens: calls fail fast with ``capability.circuit_open``
until ``cooldown_s`` has passed. Then one trial call is let through (half-open); its
success closes the circuit, its failure opens it for another cooldown. Denials and bad
inputs never count: they say nothing about the capability's health.

State changes are recorded through a :class:`~aifr.invocation.ports.CircuitStore`
when one is given, so a restarted process and ``aifr capabilities show`` see them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum

from aifr.errors import CircuitOpenError
from aifr.invocation.ports import CircuitRecord, CircuitStore

__all__ = ["CircuitBreakers", "CircuitState"]

logger = logging.getLogger(__name__)


class CircuitState(StrEnum):
    """Closed (calls flow), open (calls fail fast) or half-open (one trial call)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class _Circuit:
    __slots__ = ("failures", "opened_at", "state", "trial_in_flight")

    def __init__(self) -> None:
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.opened_at: float | None = None
        self.trial_in_flight = False


class CircuitBreakers:
    """Breaker state for every capability of one runtime. Thread-safe.

    ``clock`` is injectable (monotonic by default for in-process timing; recorded
    times use the wall clock so another process can read them).
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        store: CircuitStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._circuits: dict[str, _Circuit] = {}
        if store is not None:
            for record in store.load():
                circuit = _Circuit()
                circuit.state = CircuitState(record.state)
                circuit.failures = record.failures
                circuit.opened_at = record.opened_at
                if circuit.state is CircuitState.HALF_OPEN:
                    circuit.state = CircuitState.OPEN  # the trial's process died: reopen
                self._circuits[record.capability_id] = circuit

    def state(self, capability_id: str) -> CircuitState:
        """The current state (an open circuit past its cooldown reads as half-open)."""
        circuit = self._circuits.get(capability_id)
        if circuit is None:
            return CircuitState.CLOSED
        if circuit.state is CircuitState.OPEN and self._cooled(circuit):
            return CircuitState.HALF_OPEN
        return circuit.state

    def failures(self, capability_id: str) -> int:
        """Consecutive failures counted so far."""
        circuit = self._circuits.get(capability_id)
        return circuit.failures if circuit is not None else 0

    def _cooled(self, circuit: _Circuit) -> bool:
        return (
            circuit.opened_at is not None and self._clock() - circuit.opened_at >= self.cooldown_s
        )

    def before_call(self, capability_id: str) -> CircuitState:
        """Admit a call or refuse it; returns the state the call runs under.

        Raises:
            CircuitOpenError: the circuit is open, or half-open with its trial in flight.
        """
        circuit = self._circuits.get(capability_id)
        if circuit is None or circuit.state is CircuitState.CLOSED:
            return CircuitState.CLOSED
        with self._lock:
            if circuit.state is CircuitState.OPEN and self._cooled(circuit):
                circuit.state = CircuitState.HALF_OPEN
                circuit.trial_in_flight = False
            if circuit.state is CircuitState.HALF_OPEN and not circuit.trial_in_flight:
                circuit.trial_in_flight = True
                return CircuitState.HALF_OPEN
            if circuit.state is CircuitState.CLOSED:
                return CircuitState.CLOSED
            retry_in = max(0.0, (circuit.opened_at or 0.0) + self.cooldown_s - self._clock())
        raise CircuitOpenError(
            f"circuit for {capability_id} is open after {circuit.failures} consecutive "
            f"failures; next trial call in {retry_in:.1f}s",
            capability_id=capability_id,
            failures=circuit.failures,
            retry_in_s=round(retry_in, 3),
        )

    def record_success(self, capability_id: str) -> CircuitState:
        """A call succeeded: reset the count and close the circuit."""
        circuit = self._circuits.get(capability_id)
        if circuit is None or (circuit.state is CircuitState.CLOSED and circuit.failures == 0):
            return CircuitState.CLOSED
        with self._lock:
            was = circuit.state
            circuit.state = CircuitState.CLOSED
            circuit.failures = 0
            circuit.opened_at = None
            circuit.trial_in_flight = False
            self._save(capability_id, circuit)
        if was is not CircuitState.CLOSED:
            logger.info("circuit for %s closed after a successful trial", capability_id)
        return CircuitState.CLOSED

    def record_failure(self, capability_id: str) -> CircuitState:
        """A call failed in execution: count it and open the circuit at the threshold."""
        with self._lock:
            circuit = self._circuits.setdefault(capability_id, _Circuit())
            circuit.failures += 1
            opens = circuit.state is CircuitState.HALF_OPEN or (
                circuit.state is CircuitState.CLOSED and circuit.failures >= self.failure_threshold
            )
            if opens:
                circuit.state = CircuitState.OPEN
                circuit.opened_at = self._clock()
            circuit.trial_in_flight = False
            self._save(capability_id, circuit)
            state = circuit.state
        if opens:
            logger.warning(
                "circuit for %s opened after %d consecutive failures",
                capability_id,
                circuit.failures,
            )
        return state

    def release_trial(self, capability_id: str) -> None:
        """A half-open trial ended without a verdict (denied, invalid input): allow another."""
        circuit = self._circuits.get(capability_id)
        if circuit is not None and circuit.trial_in_flight:
            with self._lock:
                circuit.trial_in_flight = False

    def _save(self, capability_id: str, circuit: _Circuit) -> None:
        if self._store is None:
            return
        self._store.save(
            CircuitRecord(
                capability_id=capability_id,
                state=circuit.state.value,
                failures=circuit.failures,
                opened_at=circuit.opened_at,
                updated_at=time.time(),
            )
        )
