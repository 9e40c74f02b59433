"""The thread pool sync handlers run in: a handler abandoned at its deadline never holds up exit.

Python cannot stop a thread, so a handler that overruns its timeout is abandoned: the
caller gets ``execution.timeout`` and the thread runs on. In a
``ThreadPoolExecutor`` that thread would still be joined when the interpreter exits,
so one handler that never returns (a network read with no timeout) would keep
``aifr call``, ``aifr run`` or an MCP server whose client has gone alive forever.

:class:`HandlerPool` runs work on daemon threads instead, and :meth:`HandlerPool.shutdown`
waits only for work that somebody still waits for: an abandoned handler, or one past the
deadline it was given, is left to die with the process, while a call still inside its
deadline (whose audit record is still to be written) is waited for. The deadline matters
when the one who would abandon the handler is gone: an MCP client closed the session and
its event loop ended while the handler hung.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["HandlerPool"]

T = TypeVar("T")
_Work = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]
_POLL_S = 0.05
_GRACE_S = 1.0
"""How long past its deadline work is still waited for: a handler that returns just in
time still has its audit record to write."""


class HandlerPool(concurrent.futures.Executor):
    """Up to ``max_workers`` daemon threads; idle ones are reused before new ones start."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "aifr-handler") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._max_workers = max_workers
        self._prefix = thread_name_prefix
        self._names = itertools.count()
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._unfinished: set[concurrent.futures.Future[Any]] = set()  # queued or running
        self._abandoned: set[concurrent.futures.Future[Any]] = set()
        self._deadlines: dict[concurrent.futures.Future[Any], float] = {}
        self._current = threading.local()
        self._is_shut_down = False

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        """Run ``fn(*args, **kwargs)`` on a pool thread.

        Raises:
            RuntimeError: the pool was shut down.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._is_shut_down:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._queue.put((future, fn, args, kwargs))
            self._unfinished.add(future)
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._prefix}_{next(self._names)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return future

    def abandon(self, future: concurrent.futures.Future[Any]) -> None:
        """Its caller stopped waiting (a deadline passed): shutdown need not wait for it."""
        with self._lock:
            if future in self._unfinished:
                self._abandoned.add(future)

    def expire_at(self, future: concurrent.futures.Future[Any], deadline: float) -> None:
        """After ``deadline`` (``time.monotonic``) shutdown need not wait for ``future``."""
        with self._lock:
            if not future.done():
                self._deadlines[future] = deadline

    def expire_current_at(self, deadline: float) -> None:
        """:meth:`expire_at` for the work the calling pool thread is running."""
        future = getattr(self._current, "future", None)
        if future is not None:
            self.expire_at(future, deadline)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more work; with ``wait``, wait for work that is not abandoned.

        Threads still running abandoned handlers are left behind; being daemons, they end
        with the process.
        """
        with self._lock:
            self._is_shut_down = True
            if cancel_futures:
                while True:
                    try:
                        work = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if work is not None and work[0].cancel():
                        self._unfinished.discard(work[0])
            for _ in self._threads:
                self._queue.put(None)
        while wait:
            now = time.monotonic()
            with self._lock:
                awaited = {
                    future
                    for future in self._unfinished - self._abandoned
                    if not future.done() and self._deadlines.get(future, now) + _GRACE_S > now
                }
            if not awaited:
                return
            concurrent.futures.wait(awaited, timeout=_POLL_S)

    def _work(self) -> None:
        while (work := self._queue.get()) is not None:
            future, fn, args, kwargs = work
            del work
            outcome: tuple[bool, Any] | None = None
            if future.set_running_or_notify_cancel():
                self._current.future = future
                try:
                    outcome = (True, fn(*args, **kwargs))
                except BaseException as exc:  # noqa: BLE001  # handed to the waiting caller
                    outcome = (False, exc)
                finally:
                    self._current.future = None
            # Idle before the caller wakes: its next call reuses this thread.
            self._idle.release()
            if outcome is not None:
                is_ok, value = outcome
                if is_ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            with self._lock:
                self._unfinished.discard(future)
                self._abandoned.discard(future)
                self._deadlines.pop(future, None)
            del future, fn, args, kwargs, outcome
