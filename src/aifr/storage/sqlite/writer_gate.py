"""One queue for every aifr writer of a SQLite file, across threads and processes.

SQLite's write lock does not queue its waiters: a writer that finds it taken sleeps in
the busy handler (1, 2, 5, 10 ms and longer) and tries again. Two ``aifr worker``
processes on one state database therefore spent milliseconds asleep while the lock was
free, each wait several times longer than the commit it waited for (a step's commit
holds the lock about 0.3 ms), and a second worker made the pair slower than one.

The gate is taken before ``BEGIN IMMEDIATE`` and released after ``COMMIT`` or
``ROLLBACK``: first a lock for this process's threads, then an exclusive ``flock`` on
``<database>-lock`` for the other processes. The kernel wakes the next waiter when the
holder lets go, so the hand-off costs a wake-up, not a sleep. Asking again at short
intervals instead (``LOCK_NB``, 20 µs growing to 1 ms) measured about 10% slower with
two workers, and more CPU a step.

A writer waits for the gate as long as its holder holds it, as PostgreSQL's writers wait
for a row lock (``lock_timeout`` is off by default): the holder is one of aifr's own
transactions, bounded by its work, and a process that dies holding the gate releases it
with its descriptors. A database whose busy timeout is 0 never waits here either: a
writer that would have to fails at once, as SQLite's lock makes it fail.

The gate only orders aifr's writers; SQLite's lock stays the authority. A writer without
the gate (the ``sqlite3`` shell, an older aifr) still meets the busy handler, exactly as
before, and where the lock file cannot be opened (a read-only folder) or the file system
has no locks, the gate lets writers through and the busy handler does the waiting.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType

from aifr.errors import StorageError

__all__ = ["WriterGate"]


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
        "wait",
    )

    def __init__(self, database_path: Path) -> None:
        self.database_path = database_path
        self.lock_path = Path(f"{database_path}-lock")
        self.wait = True
        """``False``: a writer that finds the gate taken fails at once (busy timeout 0)."""
        self._thread_lock = threading.RLock()
        self._depth = 0  # changed only by the thread holding _thread_lock
        self._fd: int | None = None
        self._opened = False
        self._locked = False  # this process holds the lock file

    def __enter__(self) -> None:
        if not self._thread_lock.acquire(blocking=self.wait):
            raise self._taken("another thread of this process")
        try:
            if self._depth == 0:
                fd = self._descriptor()
                if fd is not None:
                    self._locked = self._flock(fd)
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

    def _flock(self, fd: int) -> bool:
        """Take the lock file (at once or not at all when the gate does not wait).

        ``False``: the file system has no locks, and SQLite's busy handler does the waiting.
        """
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._taken(f"another process (lock file {self.lock_path})") from None
        except OSError:
            return False
        return True

    def _taken(self, holder: str) -> StorageError:
        return StorageError(
            f"{self.database_path} is being written by {holder} and this writer does not"
            " wait (busy timeout 0)",
            action="waiting for the database's write lock",
        )
