"""``aifr worker``: the loop that keeps runs moving and notifications flowing.

Each turn the worker resumes every run that is ready (crash-interrupted, approved,
rejected or expired approvals, retries due) through :meth:`WorkflowEngine.recover`
and delivers due webhook notifications. It sleeps ``poll_s`` between turns, or less
when :meth:`wake` is called (the approval callback does, so an approval made through
a webhook resumes its run at once).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aifr.errors import AifrError
from aifr.workflows.engine import WorkflowEngine
from aifr.workflows.views import RunView

if TYPE_CHECKING:
    from aifr.workflows.notify import WebhookNotifier  # brings httpx and Starlette

__all__ = ["MAX_BACKOFF_S", "Worker", "backoff_s"]

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 10.0
"""Longest pause between turns while the database keeps failing."""


def backoff_s(poll_s: float, failures: int) -> float:
    """Extra pause after ``failures`` failed turns in a row: doubling, capped, jittered."""
    base = min(MAX_BACKOFF_S, poll_s * float(2 ** min(failures, 16)))
    return base * (0.5 + random.random() / 2)  # noqa: S311  # jitter, not a secret


class Worker:
    """Drives ready runs and delivers notifications until stopped."""

    def __init__(
        self,
        engine: WorkflowEngine,
        *,
        notifier: WebhookNotifier | None = None,
        poll_s: float = 0.5,
        helpers: Sequence[WorkflowEngine] = (),
    ) -> None:
        self.engine = engine
        self.helpers = tuple(helpers)
        self._helper_wakes = [threading.Event() for _ in self.helpers]
        self.notifier = notifier
        self.poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()

    def turn(self) -> list[RunView]:
        """One pass: resume ready runs, deliver due notifications; returns the runs driven."""
        driven = self.engine.recover()
        if self.notifier is not None:
            try:
                self.notifier.deliver_due()
            except AifrError as exc:  # the outbox keeps the items; try again next turn
                logger.error("notification delivery failed: %s", exc.message)
        return driven

    def run(self) -> None:
        """Turn until :meth:`stop` is called; each helper engine drives runs in its own thread.

        Helpers only take queued runs (:meth:`WorkflowEngine.recover`); notifications
        are delivered by the main loop alone.
        """
        threads = [
            threading.Thread(target=self._help, args=(helper, woken), name=f"aifr-worker-{n}")
            for n, (helper, woken) in enumerate(
                zip(self.helpers, self._helper_wakes, strict=True), start=1
            )
        ]
        for thread in threads:
            thread.start()
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    self.turn()
                    failures = 0
                except AifrError as exc:  # the database is away: back off, then try again
                    failures += 1
                    logger.error("worker turn failed: %s", exc.message)
                    self._stop.wait(backoff_s(self.poll_s, failures))
                self._wake.wait(self.poll_s)
                self._wake.clear()
        finally:
            for thread in threads:
                thread.join()

    def _help(self, engine: WorkflowEngine, woken: threading.Event) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                engine.recover()
                failures = 0
            except AifrError as exc:  # the database is away: back off, then try again
                failures += 1
                logger.error("worker turn failed: %s", exc.message)
                self._stop.wait(backoff_s(self.poll_s, failures))
            woken.wait(self.poll_s)
            woken.clear()

    def wake(self, _reason: str = "") -> None:
        """Start the next turn now (every helper's too)."""
        self._wake.set()
        for woken in self._helper_wakes:
            woken.set()

    def stop(self) -> None:
        """Finish the current turn and return from :meth:`run`."""
        self._stop.set()
        self.engine.stop()
        for helper in self.helpers:
            helper.stop()
        self.wake()
