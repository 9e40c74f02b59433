"""The PostgreSQL state database: a connection pool, transactions and numbered migrations.

The counterpart of :class:`~aifr.storage.sqlite.SqliteDatabase` for deployments where
many workers on many machines share one database. Connections come from one
``psycopg_pool.ConnectionPool`` in autocommit mode, each with ``search_path`` set to
the configured schema; a transaction is opened explicitly where a write needs one.
Each component owns a numbered list of migrations recorded in ``schema_versions``
(the same layout as SQLite), applied under a transaction-scoped advisory lock so two
processes starting together never race in the catalog. ``psycopg`` is imported on
first use (the ``pg`` extra); nothing connects at import time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from aifr.errors import (
    AifrError,
    ConfigError,
    ErrorCode,
    StorageError,
    UnconfirmedCommitError,
    WorkflowError,
)
from aifr.redaction import URL_MARK, redact_url
from aifr.redaction.urls import url_secret_spans
from aifr.stdlib.net_guard import is_loopback
from aifr.storage.sqlite.database import Migration

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

__all__ = [
    "CONNECT_WAIT_S",
    "LEASE_LOST_SQLSTATE",
    "PostgresDatabase",
    "check_dsn",
    "create_schema",
    "import_psycopg",
    "is_local_server",
    "translate_pg_errors",
]

T = TypeVar("T")
logger = logging.getLogger(__name__)

SPARE_CONNECTIONS = 1
"""Connections of the pool left for threads outside deferred commits (a lease heartbeat).

A thread inside :meth:`PostgresDatabase.deferring` keeps one connection between its uses
only while every such thread can, with these to spare; and sends a write beside its
unconfirmed commit (two at once) only while every such thread could. Beyond that, as
with ``aifr worker -c 16`` on the default pool of 16, it returns its connection to the
pool between uses and waits for its commit before the next claim, as before: holding
more would leave a thread waiting for a connection that only a waiting thread could
give back."""


_psycopg: Any = None
"""The ``psycopg`` module once :func:`import_psycopg` imported it and ``psycopg_pool``."""


def import_psycopg() -> Any:
    """The ``psycopg`` module, or ``ConfigError`` naming the ``pg`` extra.

    Kept once imported: a worker's statement path asks for it several times a step, and
    an ``import`` statement looks both modules up again each time.
    """
    global _psycopg  # set once, by whichever thread imports first
    if _psycopg is not None:
        return _psycopg
    try:
        import psycopg  # imported on first use: only PostgreSQL deployments install it
        import psycopg_pool  # noqa: F401  # checked here so the error names the extra
    except ImportError as exc:
        raise ConfigError(
            "a postgresql:// database_url needs the pg extra: pip install 'aifr[pg]'",
            code=ErrorCode.CONFIG_MISSING_EXTRA,
            extra="pg",
        ) from exc
    _psycopg = psycopg
    return psycopg


CONNECT_WAIT_S = 30.0
"""How long opening the pool keeps trying a server it cannot reach (one restarting)."""


def check_dsn(dsn: str) -> None:
    """Refuse at once a DSN libpq cannot parse, before anything tries to connect with it.

    Otherwise the pool would retry it for :data:`CONNECT_WAIT_S` and then report only
    that it timed out. The message shows the URL with its password masked, and masks it
    in libpq's own words too (they quote the part of the URL they could not read).

    Raises:
        ConfigError: ``database_url`` is not a connection string libpq accepts.
    """
    psycopg = import_psycopg()
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        reason = str(exc).strip()
        for _kind, start, end in url_secret_spans(dsn):
            reason = reason.replace(dsn[start:end], URL_MARK)
        raise ConfigError(
            f"database_url {redact_url(dsn)!r} is not a PostgreSQL URL libpq accepts: {reason}",
            key="database_url",
        ) from exc


def is_local_server(dsn: str) -> bool:
    """Whether ``dsn`` names a server on this host: a Unix socket, loopback, or this host's name.

    With several hosts (libpq tries them in turn) it is local only if each of them is.
    No host at all means libpq's default, ``PGHOST`` or else a Unix socket. A DSN libpq
    cannot parse counts as remote (it is refused elsewhere, before anything connects).
    """
    psycopg = import_psycopg()
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return False
    named = str(params.get("hostaddr") or params.get("host") or os.environ.get("PGHOST", ""))
    return all(_is_local_host(host.strip()) for host in named.split(","))


def _is_local_host(host: str) -> bool:
    if not host or host.startswith(("/", "@")) or is_loopback(host):
        return True  # a Unix socket (a path, or an abstract one), or the loopback
    # This host's own name, as it names itself (no DNS lookup: it may be slow or absent).
    return host.lower() == socket.gethostname().lower()


LEASE_LOST_SQLSTATE = "AF001"
"""What ``aifr_require_one`` raises when a fenced write matched nothing (see the audit store)."""


def translate_pg_errors(action: str) -> AbstractContextManager[None]:
    """Turn psycopg and pool errors raised inside the block into ``StorageError``.

    A fenced write refused on the server (SQLSTATE ``AF001``) becomes
    ``workflow.lease_lost`` with the message the write sent along. Anything else
    (an ``AifrError`` included) passes through unchanged.
    """
    return _TranslatedErrors(action)


class _TranslatedErrors:
    """:func:`translate_pg_errors`' block: nothing runs until something is raised.

    A plain class, as SQLite's ``translate_sqlite_errors`` is: it wraps every statement,
    twice for a lone workflow step. As a generator-based context manager that imported
    psycopg on entering it cost 1.9 µs a block in a loop here, for a block that almost
    never raises; this costs 0.5.
    """

    __slots__ = ("_action",)

    def __init__(self, action: str) -> None:
        self._action = action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not isinstance(exc, Exception) or isinstance(exc, AifrError):
            return  # nothing raised, or nothing of psycopg's: it goes on unchanged
        try:
            psycopg = import_psycopg()
        except ConfigError:  # without the pg extra nothing raised here came from psycopg
            return
        if not isinstance(exc, psycopg.Error):  # the pool's PoolTimeout is one too
            return
        action = self._action
        if exc.sqlstate == LEASE_LOST_SQLSTATE:
            raise WorkflowError(
                exc.diag.message_primary or "the lease was taken over by another worker",
                code=ErrorCode.WORKFLOW_LEASE_LOST,
                run_id=exc.diag.message_detail,
            ) from exc
        raise StorageError(f"{action} failed: {exc}", action=action) from exc


def create_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """``CREATE SCHEMA IF NOT EXISTS`` that tolerates another process creating it at once.

    Two workers starting together on a fresh schema both pass the ``IF NOT EXISTS``
    check and one fails on the catalog's unique index; for that one the schema exists,
    which is all it wanted. ``conn`` is in autocommit mode, so the failure costs nothing.
    """
    psycopg = import_psycopg()
    statement = psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
        psycopg.sql.Identifier(schema)
    )
    try:
        conn.execute(statement)
    except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema):
        return


class _Lent:
    """A connection lent by the pool for a ``with`` block, given back when it ends.

    ``pool.getconn()`` and ``pool.putconn()``, without ``pool.connection()``'s ``with
    conn:`` around the block. That exit commits: on an autocommit connection a call with
    nothing to commit, which still takes the connection's lock and drives a generator,
    and it commits a transaction a block opened with ``BEGIN`` and left open. Here
    ``putconn`` rolls such a transaction back (nothing ends a transaction but its
    writer) and replaces a broken connection, as the pool always did. A checkout and
    return took 10 to 11 µs of CPU through ``pool.connection()`` in a loop here and
    takes under 5 µs this way; a lone workflow step takes one per statement.

    The thread's unconfirmed commits, if any, are settled before the checkout (so what
    this block does comes after them), unless the block is ``beside`` them (see
    :meth:`PostgresDatabase.connection`); a connection the block left holding one is
    not given back: :meth:`PostgresDatabase.settle` does that once it is confirmed.
    Inside :meth:`PostgresDatabase.deferring` the thread keeps its connection between
    blocks instead (see :meth:`PostgresDatabase.give_back`).
    """

    __slots__ = ("_beside", "_conn", "_database")

    def __init__(self, database: PostgresDatabase, beside: bool = False) -> None:
        self._database = database
        self._beside = beside

    def __enter__(self) -> psycopg.Connection[tuple[Any, ...]]:
        database = self._database
        unsettled = database._unsettled
        if (unsettled.pending or unsettled.refused is not None) and not (
            self._beside and database.may_hold(beside=True)
        ):
            database.settle()
        conn = unsettled.kept
        if conn is None:
            conn = database.pool().getconn()
        else:
            unsettled.kept = None
        self._conn = conn
        return conn

    def __exit__(self, *exc_info: object) -> None:
        conn = self._conn
        if not any(held is conn for held, _, _ in self._database._unsettled.pending):
            self._database.give_back(conn)


class _Unsettled(threading.local):
    """A thread's commits not yet confirmed, and whether the thread defers confirmations."""

    deferring = False
    refused: UnconfirmedCommitError | None = None
    """What the thread's later uses meet inside ``deferring`` after an unconfirmed commit."""
    kept: psycopg.Connection[tuple[Any, ...]] | None = None
    """The thread's idle connection between two of its uses inside ``deferring``."""

    def __init__(self) -> None:
        self.pending: list[tuple[psycopg.Connection[tuple[Any, ...]], Callable[[], None], str]]
        self.pending = []
        """Each unconfirmed commit's connection, confirmation and action, oldest first."""


class PostgresDatabase:
    """A pool of connections to one PostgreSQL database (one schema of it). Thread-safe.

    ``schema`` puts every table in that schema (created if missing), so several
    projects or test runs can share one database.
    """

    def __init__(self, dsn: str, *, schema: str | None = None, max_size: int = 16) -> None:
        self.dsn = dsn
        self.schema = schema
        self._max_size = max_size
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._lock = threading.Lock()
        self._unsettled = _Unsettled()
        self._deferring_threads = 0

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        if self.schema is None:
            return
        psycopg = import_psycopg()
        name = psycopg.sql.Identifier(self.schema)
        create_schema(conn, self.schema)
        conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(name))

    def pool(self) -> psycopg_pool.ConnectionPool[Any]:
        """The pool, opened on first use.

        Raises:
            ConfigError: psycopg or psycopg_pool is not installed (the ``pg`` extra).
            StorageError: the server cannot be reached.
        """
        if self._pool is not None:
            return self._pool
        import_psycopg()
        import psycopg_pool

        with self._lock:
            if self._pool is None:
                check_dsn(self.dsn)
                self._check_schema()
                with translate_pg_errors("connecting to PostgreSQL"):
                    pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
                        self.dsn,
                        min_size=1,
                        max_size=self._max_size,
                        kwargs={"autocommit": True},
                        configure=self._configure,
                        open=False,
                        timeout=30.0,
                    )
                    try:
                        pool.open(wait=True, timeout=CONNECT_WAIT_S)
                    except psycopg_pool.PoolTimeout:  # the pool closed itself
                        raise StorageError(
                            f"connecting to PostgreSQL failed for {CONNECT_WAIT_S:g} s: "
                            f"{self._why_unreachable()}",
                            action="connecting to PostgreSQL",
                        ) from None
                self._pool = pool
        return self._pool

    def _check_schema(self) -> None:
        """Refuse at once a schema this role cannot create or use.

        The pool prepares each connection it opens (:meth:`_configure`) and retries one
        that fails for :data:`CONNECT_WAIT_S`, as it would a server that is restarting;
        a missing privilege will not come back by itself. So one connection is tried
        first, prepared the same way. A server that cannot be reached yet is left to the
        pool's retries. Without a schema there is nothing to prepare and nothing to try.

        Raises:
            StorageError: the schema cannot be created or set (the server's reason).
        """
        if self.schema is None:
            return
        psycopg = import_psycopg()
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError:
            return
        try:
            with translate_pg_errors(f"preparing schema {self.schema!r}"):
                self._configure(conn)
        finally:
            conn.close()

    def _why_unreachable(self) -> str:
        """Why the server cannot be reached now, in libpq's words (the pool only timed out)."""
        psycopg = import_psycopg()
        try:
            psycopg.connect(self.dsn, autocommit=True, connect_timeout=5).close()
        except psycopg.Error as exc:
            return str(exc).strip()
        return "it answers now; try again"

    def connection(
        self, *, beside: bool = False
    ) -> AbstractContextManager[psycopg.Connection[tuple[Any, ...]]]:
        """A pooled connection in autocommit mode, for reads and single statements.

        The thread's unconfirmed commit (see :meth:`deferring`) is settled first, unless
        ``beside`` and :meth:`may_hold` allows a commit beside it: for a write that does
        not depend on it, such as a worker's claim of its next run while its last run's
        last commit flushes (the connection is then another one).
        """
        return _Lent(self, beside)

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A pooled connection inside ``BEGIN`` ... ``COMMIT`` (rolled back on any error).

        The thread's unconfirmed commit (see :meth:`deferring`) is settled first.
        """
        if self._unsettled.pending or self._unsettled.refused is not None:
            self.settle()
        with self.pool().connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def deferring(self) -> Iterator[None]:
        """Let this thread's lone step writes return before their commits are confirmed.

        Inside the block a write that asks :meth:`may_hold` may hand its connection
        over with :meth:`hold` as soon as its rows are back (the server commits while the
        thread goes on); the commit's confirmation is read by :meth:`settle`, which runs
        before this thread's next use of the database and at the end of the outermost
        block (a block inside another leaves its last commit to the outer one's next use
        or end). A workflow engine drives a run inside it and settles before each step's
        effect, so the next step's checks overlap the previous step's commit and no
        effect ever happens before the step before it is durably recorded. A worker's
        turn is one outer block: a run's last commit flushes while the next run's claim
        goes out beside it, and the next run's first effect waits for both.

        A commit that was not confirmed stops the block's writes: every later use of the
        database by this thread inside the block raises the same error, so nothing is
        written after a step whose record may be missing (the run resumes later from
        what is stored). Ending the block by an exception settles too, logging a failure
        instead of raising it over the exception.

        The thread keeps one idle connection out of the pool for the whole block
        (:meth:`give_back`), handed back to the pool when the outermost block ends.

        Raises:
            UnconfirmedCommitError: at the block's end, a commit was not confirmed.
        """
        unsettled = self._unsettled
        outer = unsettled.deferring
        unsettled.deferring = True
        if not outer:
            with self._lock:
                self._deferring_threads += 1
        try:
            yield
        except BaseException:
            if unsettled.refused is None:
                try:
                    self.settle()
                except UnconfirmedCommitError as exc:
                    logger.error("%s", exc.message)
            raise
        else:
            if not outer:
                self.settle()
        finally:
            unsettled.deferring = outer
            if not outer:  # a block inside another leaves a refusal to the outer one
                with self._lock:
                    self._deferring_threads -= 1
                unsettled.refused = None
                kept, unsettled.kept = unsettled.kept, None
                if kept is not None:
                    self.pool().putconn(kept)

    def defers_commits(self) -> bool:
        """Whether this thread is inside :meth:`deferring` (commits unconfirmed or not)."""
        return self._unsettled.deferring

    def is_deferring(self) -> bool:
        """Whether this thread is inside :meth:`deferring` with no commit left unconfirmed."""
        return self.may_hold()

    def may_hold(self, *, beside: bool = False) -> bool:
        """Whether a write of this thread may leave its commit unconfirmed (:meth:`hold`).

        Inside :meth:`deferring`, after no refused commit, with no commit unconfirmed;
        ``beside``: with at most one (a write that does not depend on it, on another
        connection: see :meth:`connection`), while the pool has room for two
        connections a deferring thread (:data:`SPARE_CONNECTIONS`).
        """
        unsettled = self._unsettled
        if not unsettled.deferring or unsettled.refused is not None:
            return False
        if not beside:
            return not unsettled.pending
        return len(unsettled.pending) <= 1 and self._has_room(2)

    def _has_room(self, each: int) -> bool:
        """Whether every deferring thread may hold ``each`` connections (see SPARE_CONNECTIONS)."""
        return self._deferring_threads * each + SPARE_CONNECTIONS <= self._max_size

    def give_back(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Return a lent connection: to the pool, or inside :meth:`deferring` to the thread.

        A thread driving a run uses the database once a step at least, and its step's
        connection came back to it between steps anyway (held until the commit is
        confirmed, then given back and taken again): keeping the idle connection spares
        the pool's checkout and return on each use (about 4 µs of the step's critical
        path, between its commit's confirmation and its statement). Only an idle one is
        kept (no transaction open, out of pipeline mode, not closed), and only while the
        pool has room for one a deferring thread (:data:`SPARE_CONNECTIONS`); any other
        goes to the pool, which rolls it back or replaces it as before.
        """
        unsettled = self._unsettled
        if unsettled.deferring and unsettled.kept is None and self._has_room(1) and _is_idle(conn):
            unsettled.kept = conn
        else:
            self.pool().putconn(conn)

    def hold(
        self, conn: psycopg.Connection[tuple[Any, ...]], confirm: Callable[[], None], action: str
    ) -> None:
        """Keep ``conn`` from the pool until ``confirm`` (its commit's confirmation) has run.

        Only inside :meth:`deferring`, where :meth:`may_hold` allows it; ``action`` names
        the write in :meth:`settle`'s error.
        """
        self._unsettled.pending.append((conn, confirm, action))

    def settle(self) -> None:
        """Wait for this thread's unconfirmed commits, oldest first; give their connections back.

        Every one is read to its end, each connection given back (closed by its
        confirmation where its state is unknown), before the first failure is raised.
        The newest one's connection is the one the thread keeps (:meth:`give_back`), the
        others go to the pool: after a claim beside a run's last commit, the next run's
        steps go to the session that claimed it. Kept the other way round, one session
        took every claim and the other every step, and the first step of each run waited
        about 240 µs longer for its claim's confirmation; with the claim's session kept,
        about 30 µs less a step than claiming after the last commit is confirmed (24
        alternating pairs of 100-run drains in one process, 21 faster).

        Raises:
            UnconfirmedCommitError: the server refused a commit or the connection broke
                before confirming it (the write's outcome is unknown to this process); or
                one did earlier in the same :meth:`deferring` block.
        """
        unsettled = self._unsettled
        if unsettled.refused is not None:
            raise unsettled.refused
        pending = unsettled.pending
        if not pending:
            return
        unsettled.pending = []
        failure: tuple[UnconfirmedCommitError, Exception] | None = None
        read = 0
        try:
            for conn, confirm, action in pending:
                try:
                    confirm()
                except Exception as exc:  # noqa: BLE001  # the first is raised once all are read
                    if failure is None:
                        reason = str(exc).strip() or type(exc).__name__
                        failure = (
                            UnconfirmedCommitError(
                                f"{action} was not confirmed committed: {reason}", action=action
                            ),
                            exc,
                        )
                finally:
                    read += 1
                    if read < len(pending):
                        self.pool().putconn(conn)
                    else:  # the newest: the thread keeps it (see above)
                        self.give_back(conn)
        finally:  # interrupted (a signal's exception): the rest go to the pool, which closes them
            for conn, _, _ in pending[read:]:
                self.pool().putconn(conn)
        if failure is not None:
            error, cause = failure
            if unsettled.deferring:
                unsettled.refused = error
            raise error from cause

    def write(self, action: str, work: Callable[[psycopg.Connection[tuple[Any, ...]]], T]) -> T:
        """Run ``work`` in one transaction, translating database errors (naming ``action``)."""
        with translate_pg_errors(action), self.transaction() as conn:
            return work(conn)

    def version(self, component: str) -> int:
        """``component``'s recorded schema version (``0`` when none)."""
        with translate_pg_errors("reading schema versions"), self.connection() as conn:
            return self._version(conn, component)

    def _version(self, conn: psycopg.Connection[tuple[Any, ...]], component: str) -> int:
        if conn.execute("SELECT to_regclass('schema_versions')").fetchone() == (None,):
            return 0
        row = conn.execute(
            "SELECT version FROM schema_versions WHERE component = %s", (component,)
        ).fetchone()
        return int(row[0]) if row is not None else 0

    def migrate(self, component: str, migrations: Sequence[Migration]) -> int:
        """Apply ``component``'s migrations newer than its recorded version, in order.

        Returns the version afterwards. A schema already up to date is only read.

        Raises:
            StorageError: a migration fails (nothing of it is kept), or the database
                holds a newer schema than this code knows (``storage.schema_mismatch``).
        """
        latest = max((m.version for m in migrations), default=0)
        with translate_pg_errors(f"migrating {component}"), self.connection() as conn:
            current = self._check(conn, component, latest)
            if current == latest:
                return current
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('aifr_schema_versions'))")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_versions ("
                    "component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
                )
                current = self._check(conn, component, latest)  # under the lock now
                for migration in sorted(migrations, key=lambda m: m.version):
                    if migration.version > current:
                        for statement in _statements(migration.script):
                            conn.execute(statement)
                        current = migration.version
                conn.execute(
                    "INSERT INTO schema_versions (component, version) VALUES (%s, %s) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (component, current),
                )
        return current

    def _check(self, conn: psycopg.Connection[tuple[Any, ...]], component: str, latest: int) -> int:
        current = self._version(conn, component)
        if current > latest:
            raise StorageError(
                f"PostgreSQL schema {self.schema or 'public'}: {component!r} is at version "
                f"{current}, newer than this aifr knows ({latest}); upgrade aifr",
                code=ErrorCode.STORAGE_SCHEMA_MISMATCH,
                component=component,
            )
        return current

    def close(self) -> None:
        """Close the pool, if it was opened."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def _is_idle(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn`` is open, outside any transaction and out of pipeline mode."""
    pgconn = conn.pgconn
    pq = import_psycopg().pq
    return bool(
        not conn.closed
        and pgconn.transaction_status == pq.TransactionStatus.IDLE
        and pgconn.pipeline_status == pq.PipelineStatus.OFF
    )


def _statements(script: str) -> list[str]:
    """Split a migration script on ``;`` at line ends, outside ``$$``-quoted bodies.

    A function's body (``AS $$ ... $$``) keeps its own statements. Scripts hold no other
    literal with ``;`` at a line's end.
    """
    statements: list[str] = []
    pending = ""
    for piece in script.split(";\n"):
        pending = f"{pending};\n{piece}" if pending else piece
        if pending.count("$$") % 2 == 0:  # not inside a body
            statements.append(pending)
            pending = ""
    if pending:
        statements.append(pending)
    return [s.strip() for s in statements if s.strip().rstrip(";").strip()]
