"""Copying a project's whole state from one database to another (``aifr db copy``).

A project that outgrows one machine moves from its SQLite file to PostgreSQL; one that
leaves a shared server, or wants a local copy to inspect, goes the other way. Pointing
``database_url`` at a new database alone would start from nothing: the audit chain, the
runs in flight, pending approvals, grants, API tokens and findings would stay behind.

The copy reads the source in one snapshot (a SQLite read transaction, a PostgreSQL
``REPEATABLE READ`` one) and writes every row into the target in one transaction, so the
target gets all of it or nothing. Rows are copied as they are: the audit records keep
their seqs, ids and hashes, so the chain verifies on the target and the witness's signed
checkpoints still apply to it. Two things are not carried over, because they describe
the source's processes rather than the project's state: the worker registry
(``wf_workers``), and the runs' leases, which are released so that the target's workers
take the runs in flight at once (their epochs stay, so fencing still holds). A pending
run's prepared start event (kept in a backend's own encoding) is left out too; the run
is started by the engine when it is claimed, as runs queued by older code are.

The target must hold no state: a copy never merges into, or overwrites, another chain.
Both databases must be at this code's schema (``upgrade_schema``) before the copy.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from aifr.errors import ErrorCode, StorageError
from aifr.storage.postgres.database import PostgresDatabase, import_psycopg, translate_pg_errors
from aifr.storage.sqlite.database import SqliteDatabase, translate_sqlite_errors

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "STATE_TABLES",
    "CopyReport",
    "StateTable",
    "copy_state",
    "require_empty",
    "state_counts",
]

StateDatabase = SqliteDatabase | PostgresDatabase
_BATCH: Final = 1_000


@dataclass(frozen=True, slots=True)
class StateTable:
    """One table of the project's state, as each backend names it.

    ``key`` orders the copy (the primary key). ``serial`` is a column PostgreSQL fills
    from a sequence, moved past the copied rows afterwards. ``local`` are columns only
    one backend has, in its own encoding, left to their default on the other side.
    """

    name: str
    key: str
    pg_name: str = ""
    serial: str | None = None
    local: frozenset[str] = field(default_factory=frozenset)

    def on(self, database: StateDatabase) -> str:
        """The table's name in ``database``."""
        if isinstance(database, PostgresDatabase) and self.pg_name:
            return self.pg_name
        return self.name


# Parents before children: PostgreSQL checks each foreign key as its row is inserted.
STATE_TABLES: Final = (
    StateTable("audit_records", "seq", pg_name="aifr_audit_records"),
    StateTable("audit_checkpoints", "seq, public_key", pg_name="aifr_audit_checkpoints"),
    StateTable("audit_outbox_cursors", "sink", pg_name="aifr_audit_outbox_cursors"),
    StateTable("wf_runs", "id", local=frozenset({"start_event", "start_audit"})),
    StateTable("wf_steps", "run_id, step_id"),
    StateTable("wf_outbox", "id", serial="id"),
    StateTable("approvals", "id"),
    StateTable("idempotency_keys", "principal, key"),
    StateTable("circuits", "capability_id"),
    StateTable("grants", "id"),
    StateTable("tokens", "digest"),
    StateTable("rate_buckets", "key"),
    StateTable("findings_projects", "id"),
    StateTable("findings_runs", "project_id, id"),
    StateTable("findings_resources", "project_id, id"),
    StateTable("findings", "seq", serial="seq"),
    StateTable("findings_triage", "seq", serial="seq"),
    StateTable("findings_run_links", "finding_id, run_id"),
)
"""Every table of a project's state. ``wf_workers`` is left out: it lists the source's
processes, which do not move. ``schema_versions`` is the target's own."""


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What a copy wrote: rows per table, and the audit chain's head as copied."""

    rows: dict[str, int]
    head_seq: int
    head_hash: str
    released_leases: int

    @property
    def total(self) -> int:
        """Rows copied in all."""
        return sum(self.rows.values())

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON."""
        return {
            "rows": dict(self.rows),
            "total": self.total,
            "audit_head": {"seq": self.head_seq, "hash": self.head_hash},
            "released_leases": self.released_leases,
        }


def state_counts(database: StateDatabase) -> dict[str, int]:
    """Rows in each state table of ``database`` (every table must exist).

    Raises:
        StorageError: the database cannot be read.
    """
    counts: dict[str, int] = {}
    with _reading(database) as read:
        for table in STATE_TABLES:
            [(count,)] = read(f"SELECT count(*) FROM {table.on(database)}")  # noqa: S608  # names from STATE_TABLES
            counts[table.name] = int(count)  # the unpacking read the result whole: cursor closed
    return counts


def require_empty(database: StateDatabase) -> None:
    """Refuse a database that holds any state: a copy never merges two projects' state.

    Raises:
        StorageError: ``storage.not_empty``, naming the tables and their rows.
    """
    held = {name: rows for name, rows in state_counts(database).items() if rows}
    if held:
        listed = ", ".join(f"{name} ({rows} rows)" for name, rows in held.items())
        raise StorageError(
            f"the target database already holds state: {listed}; copy into an empty "
            "database or schema",
            code=ErrorCode.STORAGE_NOT_EMPTY,
            tables=sorted(held),
        )


def copy_state(
    source: StateDatabase, target: StateDatabase, *, now: float | None = None
) -> CopyReport:
    """Copy every state table of ``source`` into the empty ``target``, in one transaction.

    Raises:
        StorageError: ``storage.not_empty`` when ``target`` holds state, or
            ``storage.in_use`` when a run of the snapshot is leased until after ``now``
            (a process is driving it: nothing is written); a table or column one side
            lacks (upgrade both first); either database failed (the target's
            transaction is rolled back).
    """
    require_empty(target)
    plans = [(table, _shared_columns(table, source, target)) for table in STATE_TABLES]
    rows: dict[str, int] = {}
    with _reading(source) as read:
        _refuse_held_runs(read, time.time() if now is None else now)
        with _writing(target) as write:
            head = _copy_tables(plans, read, write, source, target, rows)
            released = write.release_leases()
            write.advance_serials()
    return CopyReport(rows, head[0], head[1], released)


def require_no_held_runs(database: StateDatabase, now: float | None = None) -> None:
    """Refuse ``database`` while a process holds one of its runs' leases (see below).

    Raises:
        StorageError: ``storage.in_use``, naming the runs and their holders.
    """
    with _reading(database) as read:
        _refuse_held_runs(read, time.time() if now is None else now)


def _refuse_held_runs(read: Reader, now: float) -> None:
    """Refuse a snapshot in which a process holds a run's lease.

    Its holder goes on driving the run in the source while the target's workers would
    take the copied run at once: each step's effect could then happen twice.

    Raises:
        StorageError: ``storage.in_use``, naming the runs and their holders.
    """
    held = list(
        read(
            "SELECT id, lease_owner FROM wf_runs WHERE lease_owner IS NOT NULL "  # noqa: S608  # a float literal
            f"AND lease_expires_at > {float(now)!r} ORDER BY id"
        )
    )
    if held:
        named = ", ".join(f"{run_id} (held by {owner})" for run_id, owner in held[:5])
        more = f" and {len(held) - 5} more" if len(held) > 5 else ""
        raise StorageError(
            f"{len(held)} run(s) are being driven right now: {named}{more}; stop the "
            "processes driving them (or wait for their leases to expire), then copy",
            code=ErrorCode.STORAGE_IN_USE,
            runs=[str(run_id) for run_id, _ in held],
        )


def _copy_tables(
    plans: list[tuple[StateTable, list[str]]],
    read: Reader,
    write: _SqliteWriter | _PostgresWriter,
    source: StateDatabase,
    target: StateDatabase,
    rows: dict[str, int],
) -> tuple[int, str]:
    """Copy each planned table into ``rows``' counts; returns the audit chain's head."""
    head = (0, "")
    for table, columns in plans:
        select = (
            f"SELECT {', '.join(columns)} FROM {table.on(source)} "  # noqa: S608  # names from STATE_TABLES and the catalog
            f"ORDER BY {table.key}"
        )
        written = 0
        for batch in _batches(read(select)):
            write.insert(table.on(target), columns, batch)
            written += len(batch)
            if table.name == "audit_records":
                last = batch[-1]
                head = (int(last[columns.index("seq")]), str(last[columns.index("hash")]))
        rows[table.name] = written
    return head


def _shared_columns(table: StateTable, source: StateDatabase, target: StateDatabase) -> list[str]:
    """The columns to copy: both sides', less each backend's own ones.

    Raises:
        StorageError: a side lacks the table, or a column the other side has.
    """
    found = {
        side: _columns(db, table.on(db)) for side, db in (("source", source), ("target", target))
    }
    for side, columns in found.items():
        if not columns:
            raise StorageError(
                f"the {side} database has no table {table.name}; run 'aifr db upgrade' on it",
                table=table.name,
            )
    source_columns = [c for c in found["source"] if c not in table.local]
    target_columns = {c for c in found["target"] if c not in table.local}
    if set(source_columns) != target_columns:
        differing = sorted(set(source_columns) ^ target_columns)
        raise StorageError(
            f"{table.name}: the two databases' columns differ ({', '.join(differing)}); "
            "run 'aifr db upgrade' on both with the same aifr",
            table=table.name,
        )
    return source_columns


def _columns(database: StateDatabase, name: str) -> list[str]:
    if isinstance(database, SqliteDatabase):
        with translate_sqlite_errors(f"reading the columns of {name}"):
            return [row[1] for row in database.connect().execute(f"PRAGMA table_info({name})")]
    with translate_pg_errors(f"reading the columns of {name}"), database.connection() as conn:
        found = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (name,),
        ).fetchall()
    return [str(row[0]) for row in found]


def _batches(rows: Iterator[Sequence[Any]]) -> Iterator[list[Sequence[Any]]]:
    batch: list[Sequence[Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


Reader = Any  # (sql) -> iterator of rows, valid inside its ``_reading`` block


@contextmanager
def _reading(database: StateDatabase) -> Iterator[Reader]:
    """Reads from one snapshot of ``database`` for the length of the block."""
    if isinstance(database, SqliteDatabase):
        with _sqlite_snapshot(database) as sqlite_conn:
            yield lambda sql: _sqlite_rows(sqlite_conn, sql)
        return
    with _pg_snapshot(database) as pg_conn:
        yield lambda sql: _pg_rows(pg_conn, sql)


@contextmanager
def _sqlite_snapshot(database: SqliteDatabase) -> Iterator[sqlite3.Connection]:
    conn = database.new_connection()
    try:
        with translate_sqlite_errors(f"reading {database.path}"):
            conn.execute("BEGIN")  # WAL: every read until COMMIT sees one snapshot
            yield conn
            conn.execute("COMMIT")
    finally:
        conn.close()


@contextmanager
def _pg_snapshot(database: PostgresDatabase) -> Iterator[psycopg.Connection[Any]]:
    with (
        translate_pg_errors("reading the source database"),
        database.connection() as conn,
        conn.transaction(),
    ):
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield conn


def _sqlite_rows(conn: sqlite3.Connection, sql: str) -> Iterator[Sequence[Any]]:
    cursor = conn.execute(sql)
    while chunk := cursor.fetchmany(_BATCH):
        yield from (tuple(row) for row in chunk)


def _pg_rows(conn: psycopg.Connection[Any], sql: str) -> Iterator[Sequence[Any]]:
    with conn.cursor(name="aifr_state_copy") as cursor:  # server-side: a large ledger streams
        cursor.itersize = _BATCH
        cursor.execute(sql)
        yield from cursor


class _SqliteWriter:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def insert(self, table: str, columns: list[str], rows: list[Sequence[Any]]) -> None:
        marks = ", ".join("?" * len(columns))
        self._conn.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",  # noqa: S608  # names from STATE_TABLES and the catalog
            rows,
        )

    def release_leases(self) -> int:
        return self._conn.execute(_RELEASE).rowcount

    def advance_serials(self) -> None:
        """Nothing to do: an explicit rowid moves an AUTOINCREMENT table's counter."""


class _PostgresWriter:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def insert(self, table: str, columns: list[str], rows: list[Sequence[Any]]) -> None:
        sql = import_psycopg().sql
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        with self._conn.cursor().copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    def release_leases(self) -> int:
        return int(self._conn.execute(_RELEASE).rowcount)

    def advance_serials(self) -> None:
        """Move each serial column's sequence past the copied rows."""
        for table in STATE_TABLES:
            if table.serial is None:
                continue
            name = table.pg_name or table.name
            self._conn.execute(
                f"SELECT setval(pg_get_serial_sequence(%s, %s), "  # noqa: S608  # names from STATE_TABLES
                f"COALESCE(MAX({table.serial}), 0) + 1, false) FROM {name}",
                (name, table.serial),
            )


_RELEASE: Final = (
    "UPDATE wf_runs SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL"
)


@contextmanager
def _writing(database: StateDatabase) -> Iterator[_SqliteWriter | _PostgresWriter]:
    """One transaction on ``database``: committed when the block ends, else rolled back."""
    if isinstance(database, SqliteDatabase):
        with (
            translate_sqlite_errors(f"writing {database.path}"),
            database.transaction() as conn,
        ):
            yield _SqliteWriter(conn)
        return
    with translate_pg_errors("writing the target database"), database.transaction() as conn:
        yield _PostgresWriter(conn)
