"""``workflows.overlap_commits = "auto"``: overlap a step's commit only where a core is free for it.

A worker on PostgreSQL can let the next step's checks run while the server flushes the
previous step's commit (see ``WorkflowEngine.deferred_commits``). That pays when the
worker has a core to itself and the server has its own, and costs when busy workers and
the server share a few cores: measured on a 2-core host with the server on it, one
worker drained 25% more with the overlap, two workers 16% to 18% less. "auto" decides
from what the worker registry says of this host: overlap when the database server runs
elsewhere, or when this host's live workers and the server together fit its cores.

The count is read from the registry at most once per ``refresh_s``, on the thread that
asks, so a worker started or stopped on the host changes the decision within about that
time; a failed read keeps the last decision (the registry is only advice here). A read
inside a drive's deferred commits settles the pending commit first, as any use of the
database there does, and a refusal of that commit is raised, not taken for the
registry's failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from aifr.errors import AifrError, UnconfirmedCommitError

__all__ = ["CommitOverlap"]

logger = logging.getLogger(__name__)


class CommitOverlap:
    """Whether steps should overlap their commit's flush now: call it (``True``: overlap).

    ``count_local_workers()`` is how many live workers run on this host (this one
    included, if it is one); ``cpus`` the host's cores; ``server_local`` whether the
    database server runs on this host too (its processes then share those cores).
    """

    def __init__(
        self,
        count_local_workers: Callable[[], int],
        *,
        cpus: int,
        server_local: bool,
        refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._count = count_local_workers
        self._cpus = max(1, cpus)
        self._server_local = server_local
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._next_read = float("-inf")
        self._overlap = True

    def __call__(self) -> bool:
        """Overlap now? Reads the registry when the last read is ``refresh_s`` old."""
        if not self._server_local:
            return True  # the flush uses the server's cores, never this host's
        now = self._clock()
        with self._lock:
            if now < self._next_read:
                return self._overlap
            self._next_read = now + self._refresh_s
        try:
            workers = self._count()
        except UnconfirmedCommitError:
            raise  # this thread's own pending commit was refused: not the registry's failure
        except AifrError as exc:
            logger.warning("counting this host's workers failed, kept the last: %s", exc.message)
            return self._overlap
        self._overlap = self.fits(workers)
        return self._overlap

    def fits(self, workers: int) -> bool:
        """Whether ``workers`` busy workers and the database server fit this host's cores.

        Each worker process keeps about one core busy however many runs it drives (its
        interpreter is one), and the server's backends and WAL flushes about one more.
        """
        return max(1, workers) + 1 <= self._cpus
