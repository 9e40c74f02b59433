"""Stopping a long-running command on a signal, with no lock taken in the signal handler.

A Python signal handler runs in the main thread, between two of its bytecodes, and so
possibly while that thread holds a lock: inside ``Event.wait``, say, just after it took
the event's condition back. A handler that sets that same event waits for a lock its own
thread holds, for ever. ``aifr worker`` hung on SIGTERM that way (2026-11-29: the main
thread idle in ``Event.set``, called by the handler from under ``Event.wait`` on the
same event), and a second signal arriving inside a handler does the same to any lock
the handler itself takes (a double Ctrl-C).

So the handler here only writes a byte to a pipe (no lock, never blocking), and a
thread of its own reads it and calls the stop: that thread may wait for a lock the main
thread holds, which the main thread then gives back as it always does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType, TracebackType

__all__ = ["StopOnSignals"]

logger = logging.getLogger(__name__)

_STOP = b"s"


class StopOnSignals:
    """``with StopOnSignals(stop): ...``: ``stop()`` runs once, in a thread, on the first signal.

    The handlers are installed on entry (``SIGTERM`` and ``SIGINT`` unless told
    otherwise) and the previous ones restored on exit; later signals in the block are
    ignored, as the stop is under way. Must be entered in the main thread (Python
    installs signal handlers only there).
    """

    def __init__(
        self,
        stop: Callable[[], None],
        signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    ) -> None:
        self._stop = stop
        self._signals = tuple(signals)
        self._previous: dict[signal.Signals, object] = {}
        self._read = self._write = -1
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StopOnSignals:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._thread = threading.Thread(target=self._wait, name="aifr-stop-signal", daemon=True)
        self._thread.start()
        for signum in self._signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]  # what signal() returned
        self._previous.clear()
        os.close(self._write)  # the thread reads the end of the pipe and returns
        if self._thread is not None:
            self._thread.join()
        os.close(self._read)

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(BlockingIOError):  # the pipe is full: a stop is on its way
            os.write(self._write, _STOP)

    def _wait(self) -> None:
        if os.read(self._read, 1) != _STOP:
            return  # the block ended without a signal
        try:
            self._stop()
        except Exception:  # the command must still be stoppable by the next means
            logger.exception("stopping on a signal failed")
