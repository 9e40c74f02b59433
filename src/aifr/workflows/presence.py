"""A worker's presence in the registry: announced as it starts, refreshed, removed as it stops.

``aifr workers`` reads the registry to show which worker processes are alive on which
machines and how many runs each holds. A worker refreshes its row every ``every_s``
seconds from its own thread (a third of the lease's time to live by default, as the
lease heartbeat), so a worker busy with a long step still shows as alive; one killed,
paused or cut off stops being refreshed and shows as lost once its row is older than a
lease, which is also when its runs become takeable.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import TracebackType

from aifr.errors import AifrError, StorageError
from aifr.workflows.backoff import backoff_s
from aifr.workflows.leases import is_owner_gone
from aifr.workflows.ports import WorkerInfo, WorkerRegistry

__all__ = ["Presence", "known_workers", "worker_info", "worker_state"]

logger = logging.getLogger(__name__)


def worker_info(
    worker_id: str, concurrency: int, version: str, *, clock: Callable[[], float] = time.time
) -> WorkerInfo:
    """This process as a worker named ``worker_id`` (its first engine's lease owner id)."""
    now = clock()
    return WorkerInfo(
        id=worker_id,
        host=socket.gethostname(),
        pid=os.getpid(),
        concurrency=concurrency,
        version=version,
        started_at=now,
        seen_at=now,
    )


def worker_state(worker: WorkerInfo, now: float, lease_ttl_s: float) -> str:
    """``live``, ``exited`` or ``lost``: what became of the worker.

    ``exited``: a process of this host that is gone without leaving (killed). ``lost``:
    not seen for a lease's time to live (killed, paused or cut off on another machine).
    """
    if is_owner_gone(worker.id):
        return "exited"
    return "lost" if now - worker.seen_at > lease_ttl_s else "live"


def known_workers(
    registry: WorkerRegistry, lease_ttl_s: float, now: float | None = None
) -> list[tuple[WorkerInfo, str]]:
    """Every registered worker with its :func:`worker_state`, newest first.

    Raises:
        StorageError: the database failed.
    """
    at = time.time() if now is None else now
    return [(w, worker_state(w, at, lease_ttl_s)) for w in registry.workers(at)]


ANNOUNCE_FIRST_PAUSE_S = 0.1
"""The pause after a first failed announcement; it doubles with each one after it."""


class Presence:
    """Keeps one worker's registry row fresh for the duration of a ``with`` block.

    ``retry_for_s``: how long entering keeps trying to announce the worker while the
    database fails (see :meth:`__enter__`); ``0`` tries once.
    """

    def __init__(
        self,
        registry: WorkerRegistry,
        worker: WorkerInfo,
        *,
        every_s: float,
        retry_for_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._worker = worker
        self._every_s = every_s
        self._retry_for_s = retry_for_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Presence:
        """Announce the worker, trying again for ``retry_for_s`` while the database fails.

        A worker that cannot write should not start, and one that never can still
        fails loudly. But a worker started while its database restarts (or a
        connection is cut) found it answering a moment before, when the project was
        built: it waits for it to come back, backing off as its loop does, rather than
        exit and leave its supervisor to start it again.

        Raises:
            StorageError: the database still failed after ``retry_for_s``, or the
                worker was told to stop (:meth:`cancel`) meanwhile; the last failure.
        """
        self._announce_patiently()
        self._thread = threading.Thread(target=self._beat, name="aifr-worker-presence", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop refreshing and remove the row (a database away leaves it to expire)."""
        self._stop.set()
        if self._thread is not None:  # a beat stuck on an absent database is not waited for
            self._thread.join(timeout=self._every_s)
        try:
            self._registry.leave(self._worker.id)
        except AifrError as error:
            logger.warning("could not remove worker %s: %s", self._worker.id, error.message)

    def cancel(self) -> None:
        """Stop trying to announce the worker (from a signal handler): entering fails."""
        self._stop.set()

    def _announce_patiently(self) -> None:
        deadline = time.monotonic() + self._retry_for_s
        worker = self._worker
        failures = 0
        while True:
            try:
                self._registry.announce(worker)
                return
            except StorageError as error:
                worker = replace(self._worker, seen_at=self._clock())  # seen when it is back
                failures += 1
                pause = min(
                    backoff_s(ANNOUNCE_FIRST_PAUSE_S, failures - 1), deadline - time.monotonic()
                )
                if pause <= 0 or self._stop.is_set():
                    raise
                logger.warning(
                    "registering worker %s failed (%s); trying again in %.1fs",
                    self._worker.id,
                    error.message,
                    pause,
                )
                if self._stop.wait(pause):
                    raise

    def _beat(self) -> None:
        while not self._stop.wait(self._every_s):
            now = self._clock()
            try:
                if not self._registry.seen(self._worker.id, now):  # forgotten: announce again
                    self._registry.announce(replace(self._worker, seen_at=now))
            except AifrError as error:  # the database is away: the next beat tries again
                logger.warning("worker heartbeat failed: %s", error.message)
