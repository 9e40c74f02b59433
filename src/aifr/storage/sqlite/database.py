"""The one SQLite state database: connections, pragmas and per-component migrations.

Every store (audit, approvals, grants, runs, idempotency) shares one WAL database file
so that a workflow step's result and its audit record can commit together. Each
component owns a numbered list of migrations; ``schema_versions`` records how far each
component got, so components evolve independently and never renumber.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aifr.errors import ErrorCode, StorageError
from aifr.storage.sqlite.writer_gate import WriterGate

__all__ = ["Migration", "SqliteDatabase", "translate_sqlite_errors"]

Synchronous = Literal["FULL", "NORMAL", "OFF"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step of a component: its number and the SQL script that applies it."""

    version: int
    script: str


def translate_sqlite_errors(action: str) -> AbstractContextManager[None]:
    """Turn sqlite3 and OS errors raised inside the block into ``StorageError`` naming ``action``."""
    return _Translating(action)


class _Translating:
    """The context manager of :func:`translate_sqlite_errors`.

    A plain class rather than ``@contextmanager``: every statement on a workflow step's
    path runs inside one, and a generator costs about three times as much to enter.
    """

    __slots__ = ("action",)

    def __init__(self, action: str) -> None:
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, (sqlite3.Error, OSError)):
            raise StorageError(f"{self.action} failed: {exc}", action=self.action) from exc


class _Transaction:
    """The context manager of :meth:`SqliteDatabase.transaction` (a class, as above).

    The database's :class:`WriterGate` is held from before ``BEGIN IMMEDIATE`` until
    after ``COMMIT`` or ``ROLLBACK``, so aifr's writers queue for SQLite's write lock
    instead of sleeping in its busy handler.
    """

    __slots__ = ("conn", "gate")

    def __init__(self, conn: sqlite3.Connection, gate: WriterGate) -> None:
        self.conn = conn
        self.gate = gate

    def __enter__(self) -> sqlite3.Connection:
        self.gate.__enter__()
        try:
            with _Translating("beginning a transaction"):
                self.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.gate.__exit__(None, None, None)
            raise
        return self.conn

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        try:
            if exc is not None:
                self.conn.execute("ROLLBACK")
                return
            with _Translating("committing"):
                self.conn.execute("COMMIT")
        finally:
            self.gate.__exit__(None, None, None)


class SqliteDatabase:
    """Opens connections to one SQLite file with aifr's pragmas and runs migrations.

    Connections are per thread (sqlite3 objects must not cross threads); ``connect()``
    returns this thread's connection. ``synchronous`` is FULL by default: a commit that
    returns is on disk.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout_ms: int = 30_000,
    ) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self.gate = WriterGate(self.path, timeout_s=busy_timeout_ms / 1000)
        """Held by every write transaction this process opens (see :class:`WriterGate`)."""
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._migrate_lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._writer: sqlite3.Connection | None = None
        self._before_close: list[Callable[[], None]] = []

    @property
    def busy_timeout_ms(self) -> int:
        """How long a connection opened from now on waits for SQLite's write lock.

        The writer gate waits as long (0: a writer that finds it taken fails at once).
        """
        return self._busy_timeout_ms

    @busy_timeout_ms.setter
    def busy_timeout_ms(self, value: int) -> None:
        self._busy_timeout_ms = value
        self.gate.timeout_s = value / 1000

    def new_connection(self) -> sqlite3.Connection:
        """A fresh connection with WAL, foreign keys, busy timeout and ``synchronous``.

        Autocommit mode (``isolation_level=None``): callers open transactions explicitly
        with ``BEGIN IMMEDIATE`` so writers never deadlock upgrading a read lock.

        Raises:
            StorageError: the file cannot be opened.
        """
        with translate_sqlite_errors(f"opening {self.path}"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout_ms / 1000,
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        self._all.append(conn)
        return conn

    def connect(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.new_connection()
            self._local.conn = conn
        return conn

    def writer(self) -> sqlite3.Connection:
        """The one connection that grouped writes share, opened on first use.

        Its users serialize their use of it (a group commit has one leader at a time).
        One connection keeps its page cache from one transaction to the next, where a
        thread's own connection finds the file changed by the others' commits and drops
        its cache before each transaction.
        """
        conn = self._writer
        if conn is None:
            with self._migrate_lock:
                conn = self._writer
                if conn is None:
                    conn = self._writer = self.new_connection()
        return conn

    def transaction(
        self, conn: sqlite3.Connection | None = None
    ) -> AbstractContextManager[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on any exception)."""
        return _Transaction(conn or self.connect(), self.gate)

    def migrate(self, component: str, migrations: Sequence[Migration]) -> int:
        """Apply ``component``'s migrations newer than its recorded version, in order.

        Returns the component's schema version afterwards. A schema already up to date
        is only read, so a read-only file, or one another process holds a write
        transaction on, still opens for reading (``aifr audit verify`` on a copy).

        Raises:
            StorageError: the file is corrupted, locked or read-only where a migration
                must write (the message names the file), a migration fails (nothing of
                it is kept), or the database holds a newer schema than this code knows.
        """
        latest = max((m.version for m in migrations), default=0)
        with self._migrate_lock, translate_sqlite_errors(f"opening {self.path}"):
            conn = self.connect()
            current = self._check_version(conn, component, latest)
            if current == latest:
                return current
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_versions ("
                    "component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
                )
                current = self._check_version(conn, component, latest)  # under the lock now
                for migration in sorted(migrations, key=lambda m: m.version):
                    if migration.version <= current:
                        continue
                    with translate_sqlite_errors(f"migration {component} #{migration.version}"):
                        for statement in _statements(migration.script):
                            conn.execute(statement)
                    current = migration.version
                conn.execute(
                    "INSERT INTO schema_versions(component, version) VALUES (?, ?) "
                    "ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                    (component, current),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return current

    def version(self, component: str) -> int:
        """``component``'s recorded schema version (``0`` when none); only reads.

        Raises:
            StorageError: the file cannot be read.
        """
        with self._migrate_lock, translate_sqlite_errors(f"reading {self.path}"):
            return self._check_version(self.connect(), component, latest=1 << 30)

    def _check_version(self, conn: sqlite3.Connection, component: str, latest: int) -> int:
        """``component``'s recorded schema version (0 when none), refusing a newer one."""
        has_table = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_versions'"
        ).fetchone()
        row = (
            conn.execute(
                "SELECT version FROM schema_versions WHERE component = ?", (component,)
            ).fetchone()
            if has_table
            else None
        )
        current = int(row["version"]) if row else 0
        if current > latest:
            raise StorageError(
                f"{self.path}: schema of {component!r} is at version {current}, newer "
                f"than this aifr knows ({latest}); upgrade aifr",
                code=ErrorCode.STORAGE_SCHEMA_MISMATCH,
                component=component,
            )
        return current

    def schema_versions(self) -> dict[str, int]:
        """Each component's recorded schema version (empty for a database never migrated).

        Raises:
            StorageError: the file cannot be opened or read.
        """
        conn = self.connect()
        with translate_sqlite_errors(f"reading the schema versions of {self.path}"):
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_versions'"
            ).fetchone():
                return {}
            rows = conn.execute("SELECT component, version FROM schema_versions").fetchall()
        return {str(row[0]): int(row[1]) for row in rows}

    def on_close(self, stop: Callable[[], None]) -> None:
        """Call ``stop`` first whenever this database closes.

        For a user of the database's connections on a thread of its own (the background
        WAL checkpoints): :meth:`close` closes every connection this object opened, and
        a connection closed under a running statement crashes the process.
        """
        self._before_close.append(stop)

    def close(self) -> None:
        """Stop the users registered with :meth:`on_close`, then close every connection.

        The database stays usable: connections open again on demand.
        """
        for stop in self._before_close:
            stop()
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._writer = None
        self._local = threading.local()
        self.gate.close()


def _statements(script: str) -> list[str]:
    """Split a migration script on ``;`` at line ends (scripts hold no string literals with ;)."""
    return [s.strip() for s in script.split(";\n") if s.strip().rstrip(";").strip()]
