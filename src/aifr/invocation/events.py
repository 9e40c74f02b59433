"""Lifecycle events of invocations, delivered to subscribed observers.

Observers are plain callables. They run synchronously in the invoking thread, in
subscription order; one that raises is logged and skipped, never failing the
invocation. With no subscriber, emitting costs one attribute check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Literal

from pydantic import JsonValue

__all__ = ["EventBus", "EventKind", "LifecycleEvent", "Observer"]

logger = logging.getLogger(__name__)

EventKind = Literal[
    "invocation.started",
    "invocation.phase",
    "invocation.finished",
    "policy.decided",
    "approval.waited",
    "workflow.run.started",
    "workflow.run.finished",
    "workflow.step.started",
    "workflow.step.finished",
    "hook.failed",
    "circuit.opened",
    "circuit.closed",
    "approval.requested",
    "approval.approved",
    "approval.rejected",
    "approval.consumed",
]


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One thing that happened to an invocation or approval."""

    kind: EventKind
    request_id: str
    capability_id: str
    at: float = field(default_factory=time.time)
    details: dict[str, JsonValue] = field(default_factory=dict)


Observer = Callable[[LifecycleEvent], object]


class EventBus:
    """Fan-out of lifecycle events to observers, each optionally filtered by kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._observers: tuple[tuple[Observer, frozenset[str] | None], ...] = ()

    @property
    def has_observers(self) -> bool:
        """Whether anyone is listening (the runtime skips building events otherwise)."""
        return bool(self._observers)

    def subscribe(
        self, observer: Observer, kinds: Collection[EventKind] | None = None
    ) -> Callable[[], None]:
        """Call ``observer`` for every event (or only ``kinds``); returns an unsubscribe."""
        entry = (observer, frozenset(kinds) if kinds is not None else None)
        with self._lock:
            self._observers = (*self._observers, entry)

        def unsubscribe() -> None:
            with self._lock:
                self._observers = tuple(o for o in self._observers if o is not entry)

        return unsubscribe

    def emit(self, event: LifecycleEvent) -> None:
        """Deliver ``event``; an observer that raises is logged and the rest still run."""
        for observer, kinds in self._observers:
            if kinds is not None and event.kind not in kinds:
                continue
            try:
                observer(event)
            except Exception:  # isolation: an observer bug must not fail the invocation
                logger.exception("observer %r failed on %s", observer, event.kind)
