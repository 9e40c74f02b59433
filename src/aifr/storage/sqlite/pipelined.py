"""Many rows into one statement while the rows are still being made: two threads, one each.

``executemany`` over a generator alternates on one thread: make a row in Python (the
import parses a scanner line into it), bind it, step SQLite for it, make the next. The
step is C that releases the GIL, and the host has a second core, so here the rows are
made on the caller's thread and written on another: they travel in chunks of
:data:`CHUNK_ROWS`, each written by one multi-row ``INSERT ... VALUES (...), (...)``
statement, bound in one call and stepped in one call with the GIL released, while the
caller makes the next chunk. A 1,000,000-line import spends a third of its time in
those steps.

The writer thread owns the connection from the first chunk until it is joined, so the
caller must not use the connection meanwhile; :func:`write_pipelined` returns only once
the writer has finished (or failed), so the caller's transaction is whole again when it
commits or rolls back. An error on either side stops both: a failed statement is raised
in the caller (as the ``sqlite3.Error`` it was), and a row source that raises stops the
writer after the chunk it is on.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from itertools import chain, islice
from typing import Final

__all__ = ["CHUNK_ROWS", "PipelinedInsert", "write_pipelined"]

CHUNK_ROWS: Final = 256
"""Rows per multi-row statement (17 columns: 4,352 parameters, SQLite allows 32,766)."""
_QUEUED: Final = 4  # chunks made ahead of the writer at most (about 1 MB of import rows)
_DONE: Final = object()


class PipelinedInsert:
    """The two statements of one pipelined write: one row, and :data:`CHUNK_ROWS` rows.

    ``head`` is ``INSERT INTO table (columns)``, ``tail`` what follows the values (an
    ``ON CONFLICT`` clause, or nothing); ``width`` is the number of columns.
    """

    __slots__ = ("chunk", "single")

    def __init__(self, head: str, width: int, tail: str = "") -> None:
        row = "(" + ", ".join("?" * width) + ")"
        self.single = f"{head} VALUES {row} {tail}".rstrip()
        self.chunk = f"{head} VALUES {', '.join([row] * CHUNK_ROWS)} {tail}".rstrip()


def write_pipelined(
    conn: sqlite3.Connection, insert: PipelinedInsert, rows: Iterable[Sequence[object]]
) -> None:
    """Write every row of ``rows`` with ``insert``, stepping SQLite on a second thread.

    Fewer rows than one chunk are written here, with one ``executemany``, and no
    thread is started. Rows are written in the order ``rows`` gives them.

    Raises:
        sqlite3.Error: a statement failed (the rows before it stay in the open
            transaction; the caller rolls it back); any other error binding a row
            (an integer beyond 64 bits) is raised as it is, as ``executemany`` does.
        Exception: whatever ``rows`` raised, once the writer has stopped.
    """
    source = iter(rows)
    first = list(islice(source, CHUNK_ROWS))
    if len(first) < CHUNK_ROWS:
        conn.executemany(insert.single, first)
        return
    writer = _Writer(conn, insert)
    writer.start()
    try:
        chunk = first
        # put() is False once the writer failed: its error is raised by finish()
        while len(chunk) == CHUNK_ROWS and writer.put(tuple(chain.from_iterable(chunk))):
            chunk = list(islice(source, CHUNK_ROWS))
        if 0 < len(chunk) < CHUNK_ROWS:
            writer.put(chunk)
    finally:
        writer.finish()


class _Writer:
    """The thread that steps the statements, fed through a short queue."""

    def __init__(self, conn: sqlite3.Connection, insert: PipelinedInsert) -> None:
        self._conn = conn
        self._insert = insert
        self._queue: queue.Queue[object] = queue.Queue(maxsize=_QUEUED)
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="aifr-sqlite-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, item: tuple[object, ...] | list[Sequence[object]]) -> bool:
        """Queue a full chunk (flat parameters) or the last rows; False once failed."""
        if self._error is not None:
            return False
        self._queue.put(item)
        return True

    def finish(self) -> None:
        """Let the writer end after what is queued, wait for it, raise its error."""
        self._queue.put(_DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        conn, insert = self._conn, self._insert
        while (item := self._queue.get()) is not _DONE:
            if self._error is not None:
                continue  # failed: drain what the caller queued before it noticed
            try:
                if isinstance(item, tuple):
                    conn.execute(insert.chunk, item)
                else:
                    conn.executemany(insert.single, item)  # type: ignore[arg-type]  # the last rows
            except Exception as exc:  # noqa: BLE001  # any failure reaches the caller, raised there
                self._error = exc
