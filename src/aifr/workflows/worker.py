"""``aifr worker``: the loop that keeps runs moving and notifications flowing.

Each turn the worker resumes every run that is ready (crash-interrupted, approved,
rejected or expired approvals, retries due) through :meth:`WorkflowEngine.recover`
and delivers due webhook notifications. It sleeps ``poll_s`` between turns, or less
when :meth:`wake` is called (the approval callback does, so an approval made through
a webhook resumes its run at once; on PostgreSQL every run queued or released does).

A wake is one event (one run became takeable, one approval was decided), so it wakes one
engine, an idle one when there is one: waking every engine of ``--concurrency N`` for
each queued run made N - 1 of them claim nothing and scan the runs for nothing. A busy
engine claims again before it sleeps, and polling stays the fallback.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aifr.errors import AifrError
from aifr.workflows.backoff import MAX_BACKOFF_S, backoff_s
from aifr.workflows.engine import WorkflowEngine
from aifr.workflows.retention import Retention
from aifr.workflows.views import RunView

if TYPE_CHECKING:
    from aifr.workflows.notify import WebhookNotifier  # brings httpx and Starlette

__all__ = ["MAX_BACKOFF_S", "Worker", "backoff_s"]

logger = logging.getLogger(__name__)


class Worker:
    """Drives ready runs and delivers notifications until stopped."""

    def __init__(
        self,
        engine: WorkflowEngine,
        *,
        notifier: WebhookNotifier | None = None,
        poll_s: float = 0.5,
        helpers: Sequence[WorkflowEngine] = (),
        retention: Retention | None = None,
    ) -> None:
        self.engine = engine
        self.helpers = tuple(helpers)
        self.notifier = notifier
        self.retention = retention
        self.poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._events = [self._wake, *(threading.Event() for _ in self.helpers)]
        self._idle = [False] * len(self._events)
        self._next = 0
        self._idle_lock = threading.Lock()

    def turn(self, *, views: bool = True) -> list[RunView]:
        """One pass: resume ready runs, deliver notifications, prune when due; the runs driven.

        Pruning happens when a retention rule is set and its period has passed.

        ``views=False`` (the loop of :meth:`run`): return nothing and read no run back.
        """
        driven = self.engine.recover(views=views)
        if self.notifier is not None:
            try:
                self.notifier.deliver_due()
            except AifrError as exc:  # the outbox keeps the items; try again next turn
                logger.error("notification delivery failed: %s", exc.message)
        if self.retention is not None:
            try:
                report = self.retention.prune_if_due()
            except AifrError as exc:  # nothing is lost by pruning later
                logger.error("pruning finished runs failed: %s", exc.message)
            else:
                if report is not None and report.runs:
                    logger.info("pruned %d finished run(s)", report.runs)
        return driven

    def run(self) -> None:
        """Turn until :meth:`stop` is called; each helper engine drives runs in its own thread.

        An engine waits for a wake-up (or its poll interval) between turns, unless its
        last turn drove its whole limit of runs (:attr:`WorkflowEngine.more_queued`): a
        backlog is drained turn after turn.

        Helpers only take queued runs (:meth:`WorkflowEngine.recover`); notifications
        are delivered by the main loop alone.
        """
        threads = [
            threading.Thread(target=self._help, args=(helper, n), name=f"aifr-worker-{n}")
            for n, helper in enumerate(self.helpers, start=1)
        ]
        for thread in threads:
            thread.start()
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    self.turn(views=False)
                    failures = 0
                except AifrError as exc:  # the database is away: back off, then try again
                    failures += 1
                    logger.error("worker turn failed: %s", exc.message)
                    self._stop.wait(backoff_s(self.poll_s, failures))
                if not self.engine.more_queued:
                    self._sleep(0)
        finally:
            for thread in threads:
                thread.join()

    def _help(self, engine: WorkflowEngine, index: int) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                engine.recover(views=False)
                failures = 0
            except AifrError as exc:  # the database is away: back off, then try again
                failures += 1
                logger.error("worker turn failed: %s", exc.message)
                self._stop.wait(backoff_s(self.poll_s, failures))
            if not engine.more_queued:
                self._sleep(index)

    def _sleep(self, index: int) -> None:
        """Wait for a wake (or the poll interval) as engine ``index``, idle meanwhile."""
        event = self._events[index]
        with self._idle_lock:
            self._idle[index] = True
        event.wait(self.poll_s)
        with self._idle_lock:
            self._idle[index] = False
        event.clear()

    def wake(self, _reason: str = "") -> None:
        """Start one engine's next turn now: an idle one, else the next in turn.

        A busy engine claims again before it sleeps, so it needs no wake; the one
        woken when none is idle covers a run queued just after its last claim.
        """
        with self._idle_lock:
            count = len(self._events)
            chosen = next(
                (
                    (self._next + k) % count
                    for k in range(count)
                    if self._idle[(self._next + k) % count]
                ),
                self._next % count,
            )
            self._idle[chosen] = False  # the next wake goes to another idle engine
            self._next = chosen + 1
        self._events[chosen].set()

    def stop(self) -> None:
        """Return from :meth:`run` once each engine's step in flight has committed.

        Each engine then gives its run back (the lease released) for another worker.
        """
        self._stop.set()
        self.engine.stop()
        for helper in self.helpers:
            helper.stop()
        for event in self._events:
            event.set()
