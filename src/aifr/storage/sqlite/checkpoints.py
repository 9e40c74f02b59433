"""WAL checkpoints on a second thread while a bulk write goes on.

A checkpoint copies the pages a commit wrote to the WAL back into the database file
(read the frame, write the page, fsync). SQLite runs it inside the commit that crosses
``wal_autocheckpoint``, on the writer's thread, so a large import spent a seventh of its
time there with the second core idle. The checkpoint is one C call that releases the
GIL, so here it runs on a thread of its own, on its own connection, while the writer
parses and writes its next batch: a ``PASSIVE`` checkpoint never blocks the writer, and
copies only committed frames.

A WAL is written over from its start again only when a write transaction begins with
every frame of it already copied; a checkpointer that always runs behind the writer
never lets that happen, and the WAL would grow by the size of the whole import. So the
writer calls :meth:`BackgroundCheckpoints.bound` before each batch: after ``batches``
batches it waits for the running checkpoint and copies the rest itself, and its next
transaction starts the WAL over. The WAL therefore holds at most ``batches`` batches,
whatever the timing of the two threads (counted in batches, not in pages, because only
the background thread learns the WAL's size, and it may learn it late).
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Final

from aifr.storage.sqlite.database import SqliteDatabase, translate_sqlite_errors

__all__ = ["BackgroundCheckpoints"]

DEFAULT_BATCHES: Final = 4
"""Batches between two waits for a full checkpoint (an import batch writes 20 to 60 MB)."""


class BackgroundCheckpoints:
    """Passive WAL checkpoints of one SQLite file on a background thread.

    ``request()`` after a commit; ``bound()`` before the next write; ``drain()`` when the
    bulk write ends. Thread-safe; at most one checkpoint thread runs at a time. Closing
    the database waits for it (:meth:`stop`), whoever closes it and whenever.
    """

    def __init__(self, database: SqliteDatabase, *, batches: int = DEFAULT_BATCHES) -> None:
        self._db = database
        self._batches = batches
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._again = False
        self._since_drain = 0  # request() calls since the last drain()
        self._error: Exception | None = None
        self._conn: sqlite3.Connection | None = None
        self._using = threading.Lock()  # one checkpoint at a time on the connection
        database.on_close(self.stop)

    def request(self) -> None:
        """Checkpoint what has been committed so far, on the background thread."""
        with self._lock:
            self._since_drain += 1
            if self._thread is not None:
                self._again = True
                return
            self._thread = threading.Thread(
                target=self._run, name="aifr-wal-checkpoint", daemon=True
            )
            self._thread.start()

    def bound(self) -> None:
        """Keep the WAL bounded: every ``batches`` batches, wait and copy the rest here.

        Raises:
            StorageError: the background checkpoint or this one failed.
        """
        if self._since_drain >= self._batches:
            self.drain()

    def drain(self) -> None:
        """Wait for the background thread, then copy every committed frame left.

        Nothing to do (no thread started) when no checkpoint was asked for since the
        last drain.

        Raises:
            StorageError: the background checkpoint or this one failed.
        """
        with self._lock:
            if not self._since_drain:
                return
            self._since_drain = 0
            thread = self._thread
        if thread is not None:
            thread.join()
        error, self._error = self._error, None
        if error is not None:
            raise error
        self._checkpoint()  # the writer is waiting: every committed frame is copied

    def stop(self) -> None:
        """Wait for a running checkpoint and let go of its connection: the database closes.

        Its connection is one of the database's, closed with them (the next checkpoint
        opens another). A failed checkpoint is still raised by the next :meth:`drain`.
        """
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._using:
            self._conn = None

    def _run(self) -> None:
        try:
            while True:
                self._checkpoint()
                with self._lock:
                    if not self._again:
                        self._thread = None
                        return
                    self._again = False
        except Exception as exc:  # noqa: BLE001  # whatever it is, the next drain() raises it
            with self._lock:
                self._error = exc
                self._thread = None

    def _checkpoint(self) -> None:
        """One passive checkpoint of every frame committed so far."""
        with self._using, translate_sqlite_errors("checkpointing the WAL"):
            if self._conn is None:
                self._conn = self._db.new_connection()
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
