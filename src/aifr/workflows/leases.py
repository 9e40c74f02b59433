"""Run leases: who drives a run, the heartbeat that keeps it, and dead-owner detection.

A worker drives a run only while it holds the run's lease (``owner`` and an expiry).
The heartbeat renews every held lease at a third of its time to live, so a live worker
never loses a run it is busy with. A lease whose owner died is taken back when it
expires, or at once when the owner was a process on this host that no longer exists
(its id is ``host:pid:nonce``), which is what lets ``aifr worker`` resume runs right
after a ``kill -9``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from aifr.errors import AifrError
from aifr.workflows.ports import RunStore

__all__ = ["Heartbeat", "is_owner_gone", "new_owner_id"]

_IDLE_BEATS = 3


def new_owner_id() -> str:
    """A lease owner id for this process: ``host:pid:nonce``."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


def is_owner_gone(owner: str) -> bool:
    """Whether ``owner`` was a process on this host that has exited."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False


class Heartbeat:
    """Renews this worker's leases in a background thread while any is held."""

    def __init__(
        self,
        store: RunStore,
        owner: str,
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._owner = owner
        self._ttl_s = ttl_s
        self._clock = clock
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, run_id: str) -> Iterator[None]:
        """Keep ``run_id``'s lease renewed for the duration of the block."""
        with self._lock:
            self._held[run_id] = self._held.get(run_id, 0) + 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._beat, name="aifr-lease-heartbeat", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held[run_id] -= 1
                if not self._held[run_id]:
                    del self._held[run_id]

    def held(self) -> list[str]:
        """Runs whose lease this worker is keeping."""
        with self._lock:
            return sorted(self._held)

    def _beat(self) -> None:
        idle = 0
        while True:
            time.sleep(self._ttl_s / 3)
            with self._lock:
                if not self._held:
                    idle += 1
                    if idle >= _IDLE_BEATS:  # linger so back-to-back runs reuse the thread
                        self._thread = None
                        return
                    continue
                idle = 0
                held = sorted(self._held)
            try:
                self._store.renew(held, self._owner, self._ttl_s, self._clock())
            except AifrError:  # a busy database: the next beat tries again
                continue
