"""``SqliteFindingStore``: projects, runs, deduplicated findings and triage in the state database.

Imports are the hot path: a batch of findings is one transaction of multi-row upserts,
stepped on a second thread while the caller's thread parses the next rows
(:mod:`aifr.storage.sqlite.pipelined`), and how many were new is read from ``MAX(seq)``
before and after (a row that already existed is updated in place and takes no new
``seq``), so counting costs no extra lookup per finding. The runs a finding was seen in
are its first run, its last run and the ones in ``findings_run_links``, which a trigger
fills only when a later run moves ``last_run_id`` on (so a new finding costs one row,
not two). Runs are checked once per batch instead of by a foreign key on every row.
Import batches commit without an fsync each and leave the WAL's checkpoints to a
background thread (``save_parsed``); the run's closing save does one fsync for all of
them. The schema is component ``findings`` of the state database; an older one is
refused until ``aifr findings migrate`` upgrades it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from itertools import chain, count, starmap
from operator import itemgetter
from pathlib import Path
from typing import Final

from aifr.errors import FindingsError
from aifr.findings.models import Finding, Project, Resource, Run, TriageState
from aifr.findings.ports import (
    FINDINGS_SCHEMA_VERSION,
    FindingFilter,
    FindingPage,
    SaveCounts,
    TriageChange,
)
from aifr.findings.records import ParsedFinding
from aifr.storage.atomic import write_atomically
from aifr.storage.findings_rows import (
    FINDING_COLUMNS,
    FINDING_TABLES,
    decode_cursor,
    encode_cursor,
    filter_query,
    finding_from_row,
    finding_row,
    parsed_rows,
    project_from_row,
    resource_from_row,
    run_from_row,
    schema_problems,
    stamp,
    too_new,
    too_old,
    triage_from_row,
    unknown_finding,
    unknown_project,
)
from aifr.storage.sqlite.checkpoints import BackgroundCheckpoints
from aifr.storage.sqlite.database import Migration, SqliteDatabase, translate_sqlite_errors
from aifr.storage.sqlite.pipelined import PipelinedInsert, write_pipelined

__all__ = ["FINDING_MIGRATIONS", "SqliteFindingStore", "SqliteResourceRegistry"]

FINDING_MIGRATIONS: Final = [
    Migration(
        1,
        """
        CREATE TABLE findings_projects (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            description TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE findings_runs (
            project_id TEXT NOT NULL REFERENCES findings_projects(id) ON DELETE CASCADE,
            id TEXT NOT NULL,
            scanner TEXT,
            scanner_version TEXT,
            source TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            PRIMARY KEY (project_id, id)
        );
        CREATE TABLE findings (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            project_id TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            run_id TEXT NOT NULL,
            last_run_id TEXT NOT NULL,
            scanner TEXT NOT NULL,
            severity TEXT NOT NULL,
            rule_id TEXT NOT NULL,
            title TEXT NOT NULL,
            host TEXT,
            url TEXT,
            resource_id TEXT,
            triage_state TEXT NOT NULL,
            first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL,
            occurrences INTEGER NOT NULL,
            doc TEXT NOT NULL
        );
        CREATE TABLE findings_run_links (
            finding_id TEXT NOT NULL,
            run_id TEXT NOT NULL,
            PRIMARY KEY (finding_id, run_id)
        ) WITHOUT ROWID;
        CREATE TRIGGER findings_keep_run AFTER UPDATE OF last_run_id ON findings
        WHEN old.last_run_id <> new.last_run_id AND old.last_run_id <> old.run_id
        BEGIN
            INSERT OR IGNORE INTO findings_run_links (finding_id, run_id)
            VALUES (old.id, old.last_run_id); END
        """,
    ),
    Migration(
        2,
        """
        CREATE TABLE findings_triage (
            seq INTEGER PRIMARY KEY,
            finding_id TEXT NOT NULL,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            from_state TEXT NOT NULL,
            to_state TEXT NOT NULL,
            reason TEXT NOT NULL
        );
        CREATE INDEX findings_triage_finding ON findings_triage(finding_id, seq);
        CREATE TABLE findings_resources (
            project_id TEXT NOT NULL REFERENCES findings_projects(id) ON DELETE CASCADE,
            id TEXT NOT NULL,
            kind TEXT NOT NULL,
            value TEXT NOT NULL,
            name TEXT,
            created_at TEXT NOT NULL,
            PRIMARY KEY (project_id, id),
            UNIQUE (project_id, kind, value)
        )
        """,
    ),
]

_UPSERT_INSERT: Final = PipelinedInsert(
    f"INSERT INTO findings ({FINDING_COLUMNS})",
    FINDING_COLUMNS.count(",") + 1,
    "ON CONFLICT(id) DO UPDATE SET last_run_id = excluded.last_run_id, "
    "last_seen = MAX(findings.last_seen, excluded.last_seen), "
    "occurrences = findings.occurrences + excluded.occurrences, "
    "resource_id = COALESCE(findings.resource_id, excluded.resource_id)",
)
# The id index takes random keys (hashes): with SQLite's 2 MB default cache a
# million-finding import re-reads index pages from disk; 64 MB keeps them in memory.
_IMPORT_CACHE_KIB: Final = -65536
_FIRST: Final = itemgetter(0)
_RUN_COLUMNS: Final = "project_id, id, scanner, scanner_version, source, started_at, finished_at"
_RESOURCE_COLUMNS: Final = "project_id, id, kind, value, name, created_at"
_DELETE_OF_PROJECT: Final = {
    "findings_run_links": "DELETE FROM findings_run_links WHERE finding_id IN "
    "(SELECT id FROM findings WHERE project_id = ?)",
    "findings_triage": "DELETE FROM findings_triage WHERE finding_id IN "
    "(SELECT id FROM findings WHERE project_id = ?)",
}


def _recorded_version(conn: sqlite3.Connection) -> int:
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_versions'"
    ).fetchone():
        return 0
    row = conn.execute(
        "SELECT version FROM schema_versions WHERE component = 'findings'"
    ).fetchone()
    return int(row[0]) if row else 0


class SqliteFindingStore:
    """The findings :class:`~aifr.findings.ports.StoragePort` on the project's SQLite file.

    A fresh database gets the schema on first use; a store at an older version is refused
    (``storage.schema_mismatch``, the message names ``aifr findings migrate``) unless
    ``migrate`` is true, and a newer one always is.
    """

    def __init__(self, database: SqliteDatabase, *, migrate: bool = False) -> None:
        self._db = database
        with translate_sqlite_errors(f"opening the findings store in {database.path}"):
            current = _recorded_version(database.connect())
        if current > FINDINGS_SCHEMA_VERSION:
            raise too_new(str(database.path), current)
        if 0 < current < FINDINGS_SCHEMA_VERSION and not migrate:
            raise too_old(str(database.path), current)
        database.migrate("findings", FINDING_MIGRATIONS)
        self._checkpoints = BackgroundCheckpoints(database)

    def atomic_write(self, path: Path, chunks: Iterable[bytes]) -> int:
        """Write ``chunks`` to ``path`` atomically (temporary file, fsync, rename)."""
        return write_atomically(path, chunks)

    def validate_store_layout(self) -> list[str]:
        """Missing tables or columns, or a schema version other than this code's."""
        conn = self._db.connect()
        with translate_sqlite_errors("reading the findings schema"):
            found = {
                table: {
                    row[1] for row in conn.execute(f"PRAGMA table_info({table})")
                }  # constant table names
                for table in FINDING_TABLES
            }
            version = _recorded_version(conn)
        return schema_problems(found, version)

    def get_schema_version(self) -> int:
        """The findings schema version recorded in the database."""
        with translate_sqlite_errors("reading the findings schema version"):
            return _recorded_version(self._db.connect())

    def migrate_store(self) -> int:
        """Apply the findings migrations the database lacks."""
        return self._db.migrate("findings", FINDING_MIGRATIONS)

    def save_project(self, project: Project) -> Project:
        """Create ``project`` unless its id exists; return the stored one."""
        with translate_sqlite_errors("saving a project"), self._db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO findings_projects (id, name, description, created_at) "
                "VALUES (?, ?, ?, ?)",
                (project.id, project.name, project.description, stamp(project.created_at)),
            )
        stored = self.get_project(project.id)
        assert stored is not None  # noqa: S101  # inserted or present just above
        return stored

    def get_project(self, project_id: str) -> Project | None:
        """The project with this id, or ``None``."""
        with translate_sqlite_errors("reading a project"):
            row = (
                self._db.connect()
                .execute(
                    "SELECT id, name, description, created_at FROM findings_projects WHERE id = ?",
                    (project_id,),
                )
                .fetchone()
            )
        return project_from_row(row) if row else None

    def list_projects(self) -> list[Project]:
        """Every project, by id."""
        with translate_sqlite_errors("listing projects"):
            rows = (
                self._db.connect()
                .execute(
                    "SELECT id, name, description, created_at FROM findings_projects ORDER BY id"
                )
                .fetchall()
            )
        return [project_from_row(r) for r in rows]

    def save_run(self, run: Run) -> None:
        """Insert ``run``, or update its ``finished_at``.

        An import closes its run here, so the background checkpoints of its batches are
        waited for first and the WAL they leave is copied back.
        """
        self._checkpoints.drain()
        with translate_sqlite_errors("saving a run"), self._db.transaction() as conn:
            if not conn.execute(
                "SELECT 1 FROM findings_projects WHERE id = ?", (run.project_id,)
            ).fetchone():
                raise unknown_project(run.project_id)
            conn.execute(
                f"INSERT INTO findings_runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "  # noqa: S608  # constant column list
                "ON CONFLICT(project_id, id) DO UPDATE SET finished_at = excluded.finished_at, "
                "scanner = COALESCE(excluded.scanner, findings_runs.scanner)",
                (
                    run.project_id,
                    run.id,
                    run.scanner,
                    run.scanner_version,
                    run.source,
                    stamp(run.started_at),
                    stamp(run.finished_at) if run.finished_at else None,
                ),
            )

    def list_runs(self, project_id: str) -> list[Run]:
        """A project's runs, oldest first."""
        with translate_sqlite_errors("listing runs"):
            rows = (
                self._db.connect()
                .execute(
                    f"SELECT {_RUN_COLUMNS} FROM findings_runs WHERE project_id = ? "  # noqa: S608  # constant column list
                    "ORDER BY started_at, id",
                    (project_id,),
                )
                .fetchall()
            )
        return [run_from_row(r) for r in rows]

    def _write(self, rows: Sequence[tuple[object, ...]]) -> SaveCounts:
        if not rows:
            return SaveCounts(0, 0)
        return self._write_rows(rows, {(r[1], r[4]) for r in rows})

    def _without_waiting(self, write: Callable[[], SaveCounts]) -> SaveCounts:
        conn = self._db.connect()
        self._checkpoints.bound()
        with translate_sqlite_errors("saving findings"):
            checkpoint = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        try:
            counts = write()
        finally:
            with translate_sqlite_errors("saving findings"):
                conn.execute(f"PRAGMA synchronous = {self._db.synchronous}")
                conn.execute(f"PRAGMA wal_autocheckpoint = {checkpoint}")
        self._checkpoints.request()
        return counts

    def _write_rows(
        self, rows: Iterable[tuple[object, ...]], runs: Iterable[tuple[object, object]]
    ) -> SaveCounts:
        """One transaction: check the runs, upsert ``rows`` (a list, or a stream read once)."""
        counter = count()  # rows read, counted in C: zip takes one per row it passes on
        with translate_sqlite_errors("saving findings"), self._db.transaction() as conn:
            conn.execute(f"PRAGMA cache_size = {_IMPORT_CACHE_KIB}")
            for project_id, run_id in runs:
                if not conn.execute(
                    "SELECT 1 FROM findings_runs WHERE project_id = ? AND id = ?",
                    (project_id, run_id),
                ).fetchone():
                    raise FindingsError(
                        f"run {run_id!r} is not a run of project {project_id!r}; save the run first",
                        run_id=run_id,
                        project_id=project_id,
                    )
            before = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM findings").fetchone()[0]
            write_pipelined(conn, _UPSERT_INSERT, map(_FIRST, zip(rows, counter, strict=False)))
            after = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM findings").fetchone()[0]
        new = after - before
        return SaveCounts(new=new, duplicates=next(counter) - new)

    def save_finding(self, finding: Finding) -> bool:
        """Store one finding; ``True`` when its fingerprint is new in its project."""
        return self._write([finding_row(finding)]).new == 1

    def save_findings(self, findings: Iterable[Finding]) -> SaveCounts:
        """Store many findings in one transaction."""
        return self._write([finding_row(f) for f in findings])

    def save_parsed(
        self,
        records: Iterable[tuple[ParsedFinding, str | None]],
        *,
        project_id: str,
        run_id: str,
        seen_at: datetime,
    ) -> SaveCounts:
        """Store parser records (each with its resource id) as findings first seen in ``run_id``.

        The import path commits without waiting for the disk (``synchronous = NORMAL``
        in WAL mode): the batch is still atomic and a crash of aifr loses none of it; a
        power cut may lose the last batches, never leave a half one. The import's closing
        ``save_run`` commits with the database's own setting (FULL), which puts every
        batch before it on disk too. A batch's commit does not checkpoint the WAL: the
        checkpoint (copying the pages back into the file, a seventh of a large import's
        time) runs on a background thread while the next batch parses and writes
        (:class:`~aifr.storage.sqlite.checkpoints.BackgroundCheckpoints`, which also keeps
        the WAL bounded), and ``save_run`` waits for it and copies the rest.

        ``records`` is read once, inside the transaction, one record at a time: the
        importer passes a stream that parses as it goes, so no batch of records is ever
        held in memory (the write lock is held while that batch parses, which the
        importer bounds by a time budget, ``BATCH_SECONDS``; readers never wait in WAL
        mode).
        """
        records = iter(records)
        first = next(records, None)
        if first is None:
            return SaveCounts(0, 0)
        seen = stamp(seen_at)
        rows = starmap(parsed_rows(project_id, run_id, seen), chain((first,), records))
        return self._without_waiting(lambda: self._write_rows(rows, [(project_id, run_id)]))

    def get_finding(self, project_id: str, finding_id: str) -> Finding | None:
        """One finding of a project by id, or ``None``."""
        with translate_sqlite_errors("reading a finding"):
            row = (
                self._db.connect()
                .execute(
                    f"SELECT {FINDING_COLUMNS} FROM findings WHERE id = ? AND project_id = ?",  # noqa: S608  # constant column list
                    (finding_id, project_id),
                )
                .fetchone()
            )
        return finding_from_row(row) if row else None

    def list_findings(
        self, where: FindingFilter, *, limit: int = 100, cursor: str | None = None
    ) -> FindingPage:
        """One page of findings matching ``where``, oldest first."""
        sql, params = filter_query(where, "?", after_seq=decode_cursor(cursor), limit=limit + 1)
        with translate_sqlite_errors("listing findings"):
            rows = self._db.connect().execute(sql, params).fetchall()
        page = rows[:limit]
        more = len(rows) > limit and bool(page)
        return FindingPage(
            findings=[finding_from_row(r) for r in page],
            next_cursor=encode_cursor(page[-1][17]) if more else None,
        )

    def triage_finding(
        self, project_id: str, finding_id: str, state: TriageState, *, actor: str, reason: str = ""
    ) -> TriageChange:
        """Set the triage state and append the change to the history, in one transaction."""
        at = datetime.now(UTC)
        with translate_sqlite_errors("triaging a finding"), self._db.transaction() as conn:
            row = conn.execute(
                "SELECT triage_state FROM findings WHERE id = ? AND project_id = ?",
                (finding_id, project_id),
            ).fetchone()
            if row is None:
                raise unknown_finding(project_id, finding_id)
            conn.execute(
                "UPDATE findings SET triage_state = ? WHERE id = ?", (state.value, finding_id)
            )
            conn.execute(
                "INSERT INTO findings_triage (finding_id, at, actor, from_state, to_state, reason) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (finding_id, at.isoformat(), actor, row[0], state.value, reason),
            )
        return TriageChange(finding_id, TriageState(row[0]), state, actor, at, reason)

    def list_triage_history(self, project_id: str, finding_id: str) -> list[TriageChange]:
        """A finding's triage changes, oldest first."""
        with translate_sqlite_errors("reading triage history"):
            rows = (
                self._db.connect()
                .execute(
                    "SELECT t.finding_id, t.at, t.actor, t.from_state, t.to_state, t.reason "
                    "FROM findings_triage t JOIN findings f ON f.id = t.finding_id "
                    "WHERE f.project_id = ? AND t.finding_id = ? ORDER BY t.seq",
                    (project_id, finding_id),
                )
                .fetchall()
            )
        return [triage_from_row(r) for r in rows]

    def delete_project(self, project_id: str) -> bool:
        """Delete a project and everything in it, in one transaction."""
        with translate_sqlite_errors("deleting a project"), self._db.transaction() as conn:
            for table in ("findings_run_links", "findings_triage"):
                conn.execute(_DELETE_OF_PROJECT[table], (project_id,))
            conn.execute("DELETE FROM findings WHERE project_id = ?", (project_id,))
            conn.execute("DELETE FROM findings_resources WHERE project_id = ?", (project_id,))
            conn.execute("DELETE FROM findings_runs WHERE project_id = ?", (project_id,))
            deleted = conn.execute("DELETE FROM findings_projects WHERE id = ?", (project_id,))
            return deleted.rowcount > 0

    def close(self) -> None:
        """Wait for a background checkpoint; the state database belongs to the caller.

        Raises:
            StorageError: the background checkpoint failed.
        """
        self._checkpoints.drain()


class SqliteResourceRegistry:
    """The :class:`~aifr.findings.ports.ResourceRegistry` on the findings tables.

    It shares the findings schema (resources are deleted with their project), so it
    takes the store, which has already checked the schema version.
    """

    def __init__(self, store: SqliteFindingStore) -> None:
        self._store = store
        self._db = store._db

    def add_resource(self, resource: Resource) -> Resource:
        """Register ``resource``, or return the one of the same kind and value."""
        with translate_sqlite_errors("registering a resource"), self._db.transaction() as conn:
            if not conn.execute(
                "SELECT 1 FROM findings_projects WHERE id = ?", (resource.project_id,)
            ).fetchone():
                raise unknown_project(resource.project_id)
            conn.execute(
                f"INSERT OR IGNORE INTO findings_resources ({_RESOURCE_COLUMNS}) "  # noqa: S608  # constant column list
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    resource.project_id,
                    resource.id,
                    resource.kind.value,
                    resource.value,
                    resource.name,
                    stamp(resource.created_at),
                ),
            )
            row = conn.execute(
                f"SELECT {_RESOURCE_COLUMNS} FROM findings_resources "  # noqa: S608  # constant column list
                "WHERE project_id = ? AND kind = ? AND value = ?",
                (resource.project_id, resource.kind.value, resource.value),
            ).fetchone()
        return resource_from_row(row)

    def get_resource(self, project_id: str, resource_id: str) -> Resource | None:
        """One resource of a project, or ``None``."""
        with translate_sqlite_errors("reading a resource"):
            row = (
                self._db.connect()
                .execute(
                    f"SELECT {_RESOURCE_COLUMNS} FROM findings_resources "  # noqa: S608  # constant column list
                    "WHERE project_id = ? AND id = ?",
                    (project_id, resource_id),
                )
                .fetchone()
            )
        return resource_from_row(row) if row else None

    def list_resources(self, project_id: str) -> list[Resource]:
        """A project's resources, oldest first."""
        with translate_sqlite_errors("listing resources"):
            rows = (
                self._db.connect()
                .execute(
                    f"SELECT {_RESOURCE_COLUMNS} FROM findings_resources "  # noqa: S608  # constant column list
                    "WHERE project_id = ? ORDER BY created_at, id",
                    (project_id,),
                )
                .fetchall()
            )
        return [resource_from_row(r) for r in rows]

    def remove_resource(self, project_id: str, resource_id: str) -> bool:
        """Forget a resource and unlink the findings that pointed to it."""
        with translate_sqlite_errors("removing a resource"), self._db.transaction() as conn:
            conn.execute(
                "UPDATE findings SET resource_id = NULL WHERE project_id = ? AND resource_id = ?",
                (project_id, resource_id),
            )
            gone = conn.execute(
                "DELETE FROM findings_resources WHERE project_id = ? AND id = ?",
                (project_id, resource_id),
            )
            return gone.rowcount > 0
