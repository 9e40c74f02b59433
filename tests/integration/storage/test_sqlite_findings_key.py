"""The SQLite findings store keys findings on 16 bytes: lookups use that index, old stores upgrade.

Schema version 3 replaced the unique index on the id's 32 hex characters with one on its
16 bytes (``key``). A store an older aifr wrote is refused until migrated, and the
migration keeps every row, its ``seq`` (so cursors stay valid), triage and run links.
"""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aifr.errors import ErrorCode, StorageError
from aifr.findings import Finding, ParsedFinding, Project, Run, Severity, TriageState, finding_id
from aifr.findings.ports import FindingFilter
from aifr.storage.findings_rows import FINDING_COLUMNS, finding_row
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.findings import (
    FINDING_MIGRATIONS,
    SQLITE_FINDINGS_SCHEMA_VERSION,
    SqliteFindingStore,
    finding_key,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _parsed(n: int) -> ParsedFinding:
    return ParsedFinding(
        line=n,
        scanner="nuclei",
        scanner_generation="C",
        rule_id=f"rule-{n}",
        title=f"Finding {n}",
        severity=Severity.HIGH,
        fingerprint=hashlib.sha256(f"fp-{n}".encode()).hexdigest(),
        url=f"https://app.example.test/p/{n}",
        host="app.example.test",
    )


def _finding(n: int, run: str = "r1", at: datetime = T0) -> Finding:
    return _parsed(n).to_finding(project_id="acme", run_id=run, seen_at=at)


def _version_2_store(path: Path, findings: list[Finding]) -> None:
    """A database as aifr with findings schema 2 left it: id TEXT UNIQUE, no key."""
    database = SqliteDatabase(path)
    assert database.migrate("findings", FINDING_MIGRATIONS[:2]) == 2
    conn = database.connect()
    conn.execute("INSERT INTO findings_projects VALUES ('acme', 'acme', '', '2026-01-02')")
    for run in ("r1", "r2"):
        conn.execute(
            "INSERT INTO findings_runs (project_id, id, started_at) VALUES ('acme', ?, ?)",
            (run, "2026-01-02"),
        )
    marks = ", ".join("?" for _ in FINDING_COLUMNS.split(","))
    conn.executemany(
        f"INSERT INTO findings ({FINDING_COLUMNS}) VALUES ({marks})",  # noqa: S608  # constant columns
        [finding_row(f) for f in findings],
    )
    # A later run moves last_run_id on: the trigger of schema 1 records the earlier run.
    conn.execute("UPDATE findings SET last_run_id = 'r2' WHERE id = ?", (findings[0].id,))
    conn.execute(
        "UPDATE findings SET last_run_id = 'r1' WHERE id = ?", (findings[0].id,)
    )  # r2 -> r1 keeps r2 as a link
    conn.execute(
        "INSERT INTO findings_triage (finding_id, at, actor, from_state, to_state, reason) "
        "VALUES (?, '2026-01-03T00:00:00+00:00', 'alice', 'open', 'accepted', 'known')",
        (findings[1].id,),
    )
    database.close()


def test_a_version_2_store_is_refused_then_upgraded_in_place_keeping_every_row(
    tmp_path: Path,
) -> None:
    path = tmp_path / "aifr.db"
    old = [_finding(n) for n in range(5)]
    _version_2_store(path, old)
    with pytest.raises(StorageError) as info:
        SqliteFindingStore(SqliteDatabase(path))
    assert info.value.code is ErrorCode.STORAGE_SCHEMA_MISMATCH
    assert "aifr findings migrate" in info.value.message

    store = SqliteFindingStore(SqliteDatabase(path), migrate=True)

    assert store.get_schema_version() == SQLITE_FINDINGS_SCHEMA_VERSION == 3
    assert store.validate_store_layout() == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        keys = conn.execute("SELECT id, key FROM findings ORDER BY seq").fetchall()
        assert keys == [(f.id, bytes.fromhex(f.id)) for f in old]
    page = store.list_findings(FindingFilter("acme"), limit=2)
    assert [f.id for f in page.findings] == [f.id for f in old[:2]]
    rest = store.list_findings(FindingFilter("acme"), limit=10, cursor=page.next_cursor)
    assert [f.id for f in rest.findings] == [f.id for f in old[2:]]
    assert store.get_finding("acme", old[3].id) == old[3]
    in_r2 = store.list_findings(FindingFilter("acme", run_id="r2")).findings
    assert [f.id for f in in_r2] == [old[0].id]
    history = store.list_triage_history("acme", old[1].id)
    assert [(c.actor, c.to_state) for c in history] == [("alice", TriageState.ACCEPTED)]


def test_an_upgraded_store_dedupes_new_imports_against_its_old_rows(tmp_path: Path) -> None:
    path = tmp_path / "aifr.db"
    _version_2_store(path, [_finding(n) for n in range(3)])
    store = SqliteFindingStore(SqliteDatabase(path), migrate=True)
    later = T0 + timedelta(days=1)
    counts = store.save_parsed(
        [(_parsed(n), None) for n in (1, 2, 3)], project_id="acme", run_id="r2", seen_at=later
    )
    assert (counts.new, counts.duplicates) == (1, 2)
    again = store.get_finding("acme", finding_id("acme", _parsed(2).fingerprint))
    assert again is not None and (again.occurrences, again.last_run_id) == (2, "r2")
    changed = store.triage_finding("acme", again.id, TriageState.FIXED, actor="bob")
    assert changed.from_state is TriageState.OPEN


def _plans(store: SqliteFindingStore, database: SqliteDatabase, act: object) -> list[str]:
    """The query plan of every statement on ``findings`` that ``act()`` runs."""
    conn = database.connect()
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        assert callable(act)
        act()
    finally:
        conn.set_trace_callback(None)
    plans = []
    for statement in seen:
        if " findings " not in f"{statement} " or not statement.lstrip().startswith(
            ("SELECT", "UPDATE")
        ):
            continue
        rows = conn.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
        plans.append(" / ".join(row[3] for row in rows))
    return plans


def test_every_lookup_by_id_searches_the_key_index_and_never_scans(tmp_path: Path) -> None:
    database = SqliteDatabase(tmp_path / "aifr.db")
    store = SqliteFindingStore(database)
    store.save_project(Project(id="acme", name="acme", created_at=T0))
    store.save_run(Run(id="r1", project_id="acme", started_at=T0))
    store.save_findings([_finding(n) for n in range(20)])
    target = _finding(7).id

    plans = [
        *_plans(store, database, lambda: store.get_finding("acme", target)),
        *_plans(
            store,
            database,
            lambda: store.triage_finding("acme", target, TriageState.FIXED, actor="bob"),
        ),
        *_plans(store, database, lambda: store.list_triage_history("acme", target)),
    ]

    assert len(plans) == 4  # get, triage's read and update, the history
    for plan in plans:
        assert "(key=?)" in plan, plan
        assert "SCAN f" not in plan, plan


def test_ids_not_made_by_finding_id_are_keyed_by_their_text(tmp_path: Path) -> None:
    store = SqliteFindingStore(SqliteDatabase(tmp_path / "aifr.db"))
    store.save_project(Project(id="acme", name="acme", created_at=T0))
    store.save_run(Run(id="r1", project_id="acme", started_at=T0))
    canonical = _finding(1)
    own = canonical.model_copy(update={"id": "finding-1"})
    upper = canonical.model_copy(update={"id": canonical.id.upper(), "fingerprint": "f" * 64})
    assert finding_key(canonical.id) == bytes.fromhex(canonical.id)
    assert finding_key(own.id) == "finding-1" and finding_key(upper.id) == upper.id

    counts = store.save_findings([canonical, own, upper])

    assert (counts.new, counts.duplicates) == (3, 0)
    assert store.get_finding("acme", "finding-1") == own
    assert store.get_finding("acme", upper.id) == upper
    assert store.get_finding("acme", canonical.id) == canonical
