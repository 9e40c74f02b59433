"""``PostgresFindingStore``: the findings ports on PostgreSQL (psycopg 3, the ``pg`` extra).

The same tables and rules as the SQLite store (rows are built by
:mod:`aifr.storage.findings_rows`); what is new is counted from the ``xmax`` system
column of each upserted row (0 for an insert, the locking transaction for an update),
returned by ``RETURNING``. ``schema`` puts the tables in that schema, so several
projects or test runs share one database. psycopg is imported on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

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
from aifr.storage.postgres.audit import _psycopg, _translate
from aifr.storage.postgres.database import check_dsn

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresFindingStore", "PostgresResourceRegistry"]

_MIGRATIONS: Final = {
    1: (
        """CREATE TABLE findings_projects (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
            created_at TEXT NOT NULL)""",
        """CREATE TABLE findings_runs (
            project_id TEXT NOT NULL REFERENCES findings_projects(id) ON DELETE CASCADE,
            id TEXT NOT NULL, scanner TEXT, scanner_version TEXT, source TEXT,
            started_at TEXT NOT NULL, finished_at TEXT, PRIMARY KEY (project_id, id))""",
        """CREATE TABLE findings (
            seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, project_id TEXT NOT NULL,
            fingerprint TEXT NOT NULL, run_id TEXT NOT NULL, last_run_id TEXT NOT NULL,
            scanner TEXT NOT NULL, severity TEXT NOT NULL, rule_id TEXT NOT NULL,
            title TEXT NOT NULL, host TEXT, url TEXT, resource_id TEXT,
            triage_state TEXT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
            occurrences INTEGER NOT NULL, doc TEXT NOT NULL,
            FOREIGN KEY (project_id, run_id) REFERENCES findings_runs(project_id, id),
            FOREIGN KEY (project_id, last_run_id) REFERENCES findings_runs(project_id, id))""",
        "CREATE INDEX findings_project_seq ON findings(project_id, seq)",
        """CREATE TABLE findings_run_links (
            finding_id TEXT NOT NULL, run_id TEXT NOT NULL, PRIMARY KEY (finding_id, run_id))""",
    ),
    2: (
        """CREATE TABLE findings_triage (
            seq BIGSERIAL PRIMARY KEY, finding_id TEXT NOT NULL, at TEXT NOT NULL,
            actor TEXT NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL,
            reason TEXT NOT NULL)""",
        "CREATE INDEX findings_triage_finding ON findings_triage(finding_id, seq)",
        """CREATE TABLE findings_resources (
            project_id TEXT NOT NULL REFERENCES findings_projects(id) ON DELETE CASCADE,
            id TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL, name TEXT,
            created_at TEXT NOT NULL, PRIMARY KEY (project_id, id),
            UNIQUE (project_id, kind, value))""",
    ),
}
_UPSERT: Final = (
    f"INSERT INTO findings ({FINDING_COLUMNS}) "  # noqa: S608  # constant column list
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (id) DO UPDATE SET last_run_id = excluded.last_run_id, "
    "last_seen = GREATEST(findings.last_seen, excluded.last_seen), "
    "occurrences = findings.occurrences + excluded.occurrences, "
    "resource_id = COALESCE(findings.resource_id, excluded.resource_id) "
    "RETURNING (xmax = 0)"
)
_LINK: Final = (
    "INSERT INTO findings_run_links (finding_id, run_id) VALUES (%s, %s) ON CONFLICT DO NOTHING"
)
_RUN_COLUMNS: Final = "project_id, id, scanner, scanner_version, source, started_at, finished_at"
_RESOURCE_COLUMNS: Final = "project_id, id, kind, value, name, created_at"
_DELETE_OF_PROJECT: Final = {
    "findings_run_links": "DELETE FROM findings_run_links WHERE finding_id IN "
    "(SELECT id FROM findings WHERE project_id = %s)",
    "findings_triage": "DELETE FROM findings_triage WHERE finding_id IN "
    "(SELECT id FROM findings WHERE project_id = %s)",
}
_VERSION: Final = "SELECT version FROM schema_versions WHERE component = 'findings'"


class PostgresFindingStore:
    """The findings :class:`~aifr.findings.ports.StoragePort` on PostgreSQL.

    A fresh schema gets the tables; an older one is refused (``storage.schema_mismatch``,
    naming ``aifr findings migrate``) unless ``migrate`` is true; a newer one always is.
    """

    def __init__(self, dsn: str, *, schema: str | None = None, migrate: bool = False) -> None:
        check_dsn(dsn)
        self._dsn = dsn
        self._schema = schema
        self._local = threading.local()
        self._all: list[psycopg.Connection[tuple[Any, ...]]] = []
        self._all_lock = threading.Lock()
        current = self.get_schema_version()
        if current > FINDINGS_SCHEMA_VERSION:
            raise too_new(f"PostgreSQL schema {schema or 'public'}", current)
        if 0 < current < FINDINGS_SCHEMA_VERSION and not migrate:
            raise too_old(f"PostgreSQL schema {schema or 'public'}", current)
        self.migrate_store()

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn: psycopg.Connection[tuple[Any, ...]] | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn
        psycopg = _psycopg()
        with _translate("connecting to PostgreSQL"):
            conn = psycopg.connect(self._dsn, autocommit=True)
            if self._schema is not None:
                identifier = psycopg.sql.Identifier(self._schema)
                conn.execute(psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(identifier))
                conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(identifier))
        self._local.conn = conn
        with self._all_lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def _transaction(self, action: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        conn = self._connect()
        with _translate(action), conn.transaction():
            yield conn

    def _read(self, action: str, sql: str, params: Sequence[object] = ()) -> list[Any]:
        with _translate(action):
            return self._connect().execute(sql, params).fetchall()

    def atomic_write(self, path: Path, chunks: Iterable[bytes]) -> int:
        """Write ``chunks`` to ``path`` atomically (temporary file, fsync, rename)."""
        return write_atomically(path, chunks)

    def validate_store_layout(self) -> list[str]:
        """Missing tables or columns, or a schema version other than this code's."""
        rows = self._read(
            "reading the findings schema",
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ANY(%s)",
            (list(FINDING_TABLES),),
        )
        found: dict[str, set[str]] = {}
        for table, column in rows:
            found.setdefault(table, set()).add(column)
        return schema_problems(found, self.get_schema_version())

    def get_schema_version(self) -> int:
        """The findings schema version recorded in the schema (0 when none)."""
        exists = self._read(
            "reading the findings schema version",
            "SELECT 1 FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name = 'schema_versions'",
        )
        if not exists:
            return 0
        rows = self._read("reading the findings schema version", _VERSION)
        return int(rows[0][0]) if rows else 0

    def migrate_store(self) -> int:
        """Apply the findings migrations the schema lacks, under an advisory lock."""
        with self._transaction("migrating the findings schema") as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('aifr_findings_schema'))")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_versions ("
                "component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            row = conn.execute(_VERSION).fetchone()
            current = int(row[0]) if row else 0
            if current > FINDINGS_SCHEMA_VERSION:
                raise too_new(f"PostgreSQL schema {self._schema or 'public'}", current)
            for version in sorted(_MIGRATIONS):
                if version > current:
                    for statement in _MIGRATIONS[version]:
                        conn.execute(statement)
                    current = version
            conn.execute(
                "INSERT INTO schema_versions (component, version) VALUES ('findings', %s) "
                "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (current,),
            )
        return current

    def save_project(self, project: Project) -> Project:
        """Create ``project`` unless its id exists; return the stored one."""
        with self._transaction("saving a project") as conn:
            conn.execute(
                "INSERT INTO findings_projects (id, name, description, created_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (project.id, project.name, project.description, stamp(project.created_at)),
            )
        stored = self.get_project(project.id)
        assert stored is not None  # noqa: S101  # inserted or present just above
        return stored

    def get_project(self, project_id: str) -> Project | None:
        """The project with this id, or ``None``."""
        rows = self._read(
            "reading a project",
            "SELECT id, name, description, created_at FROM findings_projects WHERE id = %s",
            (project_id,),
        )
        return project_from_row(rows[0]) if rows else None

    def list_projects(self) -> list[Project]:
        """Every project, by id."""
        rows = self._read(
            "listing projects",
            "SELECT id, name, description, created_at FROM findings_projects ORDER BY id",
        )
        return [project_from_row(r) for r in rows]

    def save_run(self, run: Run) -> None:
        """Insert ``run``, or update its ``finished_at``."""
        with self._transaction("saving a run") as conn:
            if not conn.execute(
                "SELECT 1 FROM findings_projects WHERE id = %s", (run.project_id,)
            ).fetchone():
                raise unknown_project(run.project_id)
            conn.execute(
                f"INSERT INTO findings_runs ({_RUN_COLUMNS}) "  # noqa: S608  # constant column list
                "VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (project_id, id) DO UPDATE SET finished_at = excluded.finished_at, "
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
        rows = self._read(
            "listing runs",
            f"SELECT {_RUN_COLUMNS} FROM findings_runs WHERE project_id = %s "  # noqa: S608  # constant column list
            "ORDER BY started_at, id",
            (project_id,),
        )
        return [run_from_row(r) for r in rows]

    def _write(self, rows: Sequence[tuple[object, ...]]) -> SaveCounts:
        if not rows:
            return SaveCounts(0, 0)
        new = 0
        with self._transaction("saving findings") as conn:
            for project_id, run_id in {(r[1], r[4]) for r in rows}:
                if not conn.execute(
                    "SELECT 1 FROM findings_runs WHERE project_id = %s AND id = %s",
                    (project_id, run_id),
                ).fetchone():
                    raise FindingsError(
                        f"run {run_id!r} is not a run of project {project_id!r}; save the run first",
                        run_id=run_id,
                        project_id=project_id,
                    )
            with conn.cursor() as cursor:
                cursor.executemany(_UPSERT, rows, returning=True)
                while True:
                    answer = cursor.fetchone()
                    new += bool(answer and answer[0])
                    if not cursor.nextset():
                        break
                cursor.executemany(_LINK, [(r[0], r[4]) for r in rows])
        return SaveCounts(new=new, duplicates=len(rows) - new)

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
        """Store parser records (each with its resource id) as findings first seen in ``run_id``."""
        row = parsed_rows(project_id, run_id, stamp(seen_at))
        return self._write([row(p, r) for p, r in records])

    def get_finding(self, project_id: str, finding_id: str) -> Finding | None:
        """One finding of a project by id, or ``None``."""
        rows = self._read(
            "reading a finding",
            f"SELECT {FINDING_COLUMNS} FROM findings WHERE id = %s AND project_id = %s",  # noqa: S608  # constant column list
            (finding_id, project_id),
        )
        return finding_from_row(rows[0]) if rows else None

    def list_findings(
        self, where: FindingFilter, *, limit: int = 100, cursor: str | None = None
    ) -> FindingPage:
        """One page of findings matching ``where``, oldest first."""
        sql, params = filter_query(where, "%s", after_seq=decode_cursor(cursor), limit=limit + 1)
        rows = self._read("listing findings", sql, params)
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
        with self._transaction("triaging a finding") as conn:
            row = conn.execute(
                "SELECT triage_state FROM findings WHERE id = %s AND project_id = %s FOR UPDATE",
                (finding_id, project_id),
            ).fetchone()
            if row is None:
                raise unknown_finding(project_id, finding_id)
            conn.execute(
                "UPDATE findings SET triage_state = %s WHERE id = %s", (state.value, finding_id)
            )
            conn.execute(
                "INSERT INTO findings_triage (finding_id, at, actor, from_state, to_state, reason) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (finding_id, at.isoformat(), actor, row[0], state.value, reason),
            )
        return TriageChange(finding_id, TriageState(row[0]), state, actor, at, reason)

    def list_triage_history(self, project_id: str, finding_id: str) -> list[TriageChange]:
        """A finding's triage changes, oldest first."""
        rows = self._read(
            "reading triage history",
            "SELECT t.finding_id, t.at, t.actor, t.from_state, t.to_state, t.reason "
            "FROM findings_triage t JOIN findings f ON f.id = t.finding_id "
            "WHERE f.project_id = %s AND t.finding_id = %s ORDER BY t.seq",
            (project_id, finding_id),
        )
        return [triage_from_row(r) for r in rows]

    def delete_project(self, project_id: str) -> bool:
        """Delete a project and everything in it, in one transaction."""
        with self._transaction("deleting a project") as conn:
            for table in ("findings_run_links", "findings_triage"):
                conn.execute(_DELETE_OF_PROJECT[table], (project_id,))
            conn.execute("DELETE FROM findings WHERE project_id = %s", (project_id,))
            conn.execute("DELETE FROM findings_resources WHERE project_id = %s", (project_id,))
            conn.execute("DELETE FROM findings_runs WHERE project_id = %s", (project_id,))
            deleted = conn.execute("DELETE FROM findings_projects WHERE id = %s", (project_id,))
            return deleted.rowcount > 0

    def close(self) -> None:
        """Close every connection this store opened."""
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


class PostgresResourceRegistry:
    """The :class:`~aifr.findings.ports.ResourceRegistry` on the PostgreSQL findings tables."""

    def __init__(self, store: PostgresFindingStore) -> None:
        self._store = store

    def add_resource(self, resource: Resource) -> Resource:
        """Register ``resource``, or return the one of the same kind and value."""
        with self._store._transaction("registering a resource") as conn:
            if not conn.execute(
                "SELECT 1 FROM findings_projects WHERE id = %s", (resource.project_id,)
            ).fetchone():
                raise unknown_project(resource.project_id)
            conn.execute(
                f"INSERT INTO findings_resources ({_RESOURCE_COLUMNS}) "  # noqa: S608  # constant column list
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
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
                "WHERE project_id = %s AND kind = %s AND value = %s",
                (resource.project_id, resource.kind.value, resource.value),
            ).fetchone()
        return resource_from_row(row)

    def get_resource(self, project_id: str, resource_id: str) -> Resource | None:
        """One resource of a project, or ``None``."""
        rows = self._store._read(
            "reading a resource",
            f"SELECT {_RESOURCE_COLUMNS} FROM findings_resources "  # noqa: S608  # constant column list
            "WHERE project_id = %s AND id = %s",
            (project_id, resource_id),
        )
        return resource_from_row(rows[0]) if rows else None

    def list_resources(self, project_id: str) -> list[Resource]:
        """A project's resources, oldest first."""
        rows = self._store._read(
            "listing resources",
            f"SELECT {_RESOURCE_COLUMNS} FROM findings_resources "  # noqa: S608  # constant column list
            "WHERE project_id = %s ORDER BY created_at, id",
            (project_id,),
        )
        return [resource_from_row(r) for r in rows]

    def remove_resource(self, project_id: str, resource_id: str) -> bool:
        """Forget a resource and unlink the findings that pointed to it."""
        with self._store._transaction("removing a resource") as conn:
            conn.execute(
                "UPDATE findings SET resource_id = NULL WHERE project_id = %s AND resource_id = %s",
                (project_id, resource_id),
            )
            gone = conn.execute(
                "DELETE FROM findings_resources WHERE project_id = %s AND id = %s",
                (project_id, resource_id),
            )
            return gone.rowcount > 0
