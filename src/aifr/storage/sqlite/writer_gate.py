"""One queue for every aifr writer of a SQLite file, across threads and processes.

SQLite's write lock does not queue its waiters: a writer that finds it taken sleeps in
the busy handler (1, 2, 5, 10 ms and longer) and tries again. Two ``aifr worker``
processes on one state database therefore spent milliseconds asleep while the lock was
free, each wait several times longer than the commit it waited for (a step's commit
holds the lock about 0.3 ms), and a second worker made the pair slower than one.

The gate is taken before ``BEGIN IMMEDIATE`` and released after ``COMMIT`` or
``ROLLBACK``: first a lock for this process's threads, then an exclusive ``flock`` on
``<database>-lock`` for the other processes. A writer that finds the file locked asks
again every 100 µs, a third of a commit, for its first 10 ms of waiting, then at
intervals growing to 5 ms: a hand-off costs a fraction of a commit, and a long wait
(behind an import) costs little CPU. Sleeping in a blocking ``flock`` instead was about
as fast, but cannot be bounded: a worker stopped while it held the gate (``Ctrl-Z``,
``SIGSTOP``) would have left every other writer waiting with no message. Both waits
end at the database's busy timeout, with an error naming the file, as SQLite's own
wait does; a busy timeout of 0 never waits. A process that dies holding the gate
releases it with its descriptors.

The gate only orders aifr's writers; SQLite's lock stays the authority. A writer without
the gate (the ``sqlite3`` shell, an older aifr) still meets the busy handler, exactly as
before, and where the lock file cannot be opened (a read-only folder) or the file system
has no locks, the gate lets writers through and the busy handler does the waiting.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Final

from aifr.errors import StorageError

__all__ = ["WriterGate"]

_POLL_S: Final = 0.000_1
"""How often a waiting writer asks for the lock file at first (a third of a commit)."""
_POLL_FAST_FOR_S: Final = 0.01
"""How long it asks that often before the interval grows."""
_POLL_LONGEST_S: Final = 0.005
"""The interval's bound for a long wait."""


class WriterGate:
    """A reentrant lock shared by this process's threads and, through ``flock``, by others.

    Reentrant: a transaction's own thread may enter again (its inner use is a no-op), so
    a code path that nests a write inside a write fails on SQLite's lock with the same
    error it always did instead of waiting on itself here.
    """

    __slots__ = (
        "_depth",
        "_fd",
        "_locked",
        "_opened",
        "_thread_lock",
        "database_path",
        "lock_path",
        "timeout_s",
    )

    def __init__(self, database_path: Path, *, timeout_s: float) -> None:
        self.database_path = database_path
        self.lock_path = Path(f"{database_path}-lock")
        self.timeout_s = timeout_s
        """The longest a writer waits for the gate (the busy timeout); 0: not at all."""
        self._thread_lock = threading.RLock()
        self._depth = 0  # changed only by the thread holding _thread_lock
        self._fd: int | None = None
        self._opened = False
        self._locked = False  # this process holds the lock file

    def __enter__(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        if not self._thread_lock.acquire(timeout=self.timeout_s):
            raise self._taken("another thread of this process")
        try:
            if self._depth == 0:
                fd = self._descriptor()
                if fd is not None:
                    self._locked = self._flock(fd, deadline)
            self._depth += 1
        except BaseException:
            self._thread_lock.release()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._locked:
                self._locked = False
                fcntl.flock(self._fd, fcntl.LOCK_UN)  # type: ignore[arg-type]  # set when locked
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        """Close the lock file (the gate opens it again if used afterwards)."""
        with self._thread_lock:
            if self._fd is not None:
                os.close(self._fd)  # releases the lock file too, were it held
            self._fd = None
            self._opened = False
            self._locked = False

    def _descriptor(self) -> int | None:
        """The lock file, opened on first use; ``None`` where it cannot be (no gate then)."""
        if not self._opened:
            self._opened = True
            try:
                self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                self._fd = None
        return self._fd

    def _flock(self, fd: int, deadline: float) -> bool:
        """Take the lock file by ``deadline`` (asking at the intervals the module describes).

        ``False``: the file system has no locks, and SQLite's busy handler does the waiting.
        """
        interval = _POLL_S
        fast_until = time.monotonic() + _POLL_FAST_FOR_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
            except OSError:
                return False
            now = time.monotonic()
            if now >= deadline:
                raise self._taken(f"another process (lock file {self.lock_path})")
            if now >= fast_until:
                interval = min(interval * 2, _POLL_LONGEST_S)
            time.sleep(min(interval, deadline - now))

    def _taken(self, holder: str) -> StorageError:
        return StorageError(
            f"{self.database_path} is being written by {holder}; gave up after"
            f" {self.timeout_s:g}s (the busy timeout)",
            action="waiting for the database's write lock",
        )
