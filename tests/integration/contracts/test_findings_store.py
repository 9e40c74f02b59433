"""The findings ``StoragePort`` and ``ResourceRegistry`` contract, against memory, SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import psycopg
import pytest
from psycopg import sql

from aifr.errors import ErrorCode, FindingsError, StorageError
from aifr.findings import (
    Finding,
    ParsedFinding,
    Project,
    ResourceKind,
    Run,
    Severity,
    TriageState,
    finding_id,
)
from aifr.findings.ports import FindingFilter, ResourceRegistry, StoragePort
from aifr.findings.resources import new_resource
from aifr.storage.memory.findings import InMemoryFindingStore, InMemoryResourceRegistry
from aifr.storage.postgres.findings import PostgresFindingStore, PostgresResourceRegistry
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.findings import SqliteFindingStore, SqliteResourceRegistry

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Stores:
    findings: StoragePort
    resources: ResourceRegistry


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.pg)])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "memory":
        memory = InMemoryFindingStore()
        yield Stores(memory, InMemoryResourceRegistry(memory))
        return
    if request.param == "sqlite":
        database = SqliteDatabase(tmp_path / "aifr.db")
        lite = SqliteFindingStore(database)
        yield Stores(lite, SqliteResourceRegistry(lite))
        database.close()
        return
    dsn = os.environ.get("AIFR_TEST_PG_DSN")
    if not dsn:
        pytest.skip("AIFR_TEST_PG_DSN is not set: the PostgreSQL adapter needs a server")
    schema = f"aifr_test_{uuid.uuid4().hex[:12]}"
    pg = PostgresFindingStore(dsn, schema=schema)
    yield Stores(pg, PostgresResourceRegistry(pg))
    pg.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def parsed(n: int, *, severity: Severity = Severity.HIGH, scanner: str = "nuclei") -> ParsedFinding:
    return ParsedFinding(
        line=n,
        scanner=scanner,
        scanner_generation="C",
        rule_id=f"rule-{n}",
        title=f"Finding {n}",
        severity=severity,
        fingerprint=hashlib.sha256(f"fp-{n}".encode()).hexdigest(),
        url=f"https://app.example.test/p/{n}",
        host="app.example.test",
        raw={"extra": n},
    )


def project_with_run(store: StoragePort, project: str = "acme", run: str = "r1") -> None:
    store.save_project(Project(id=project, name=project, created_at=T0))
    store.save_run(Run(id=run, project_id=project, scanner="nuclei", started_at=T0))


def finding(n: int, run: str = "r1", *, at: datetime = T0, project: str = "acme") -> Finding:
    return parsed(n).to_finding(project_id=project, run_id=run, seen_at=at)


def test_a_saved_finding_reads_back_equal(stores: Stores) -> None:
    store = stores.findings
    project_with_run(store)
    assert store.save_finding(finding(1)) is True
    assert store.get_finding("acme", finding(1).id) == finding(1)
    assert store.get_finding("other", finding(1).id) is None


def test_parser_records_and_models_are_stored_alike(stores: Stores) -> None:
    store = stores.findings
    project_with_run(store)
    counts = store.save_parsed(
        [(parsed(1), None), (parsed(2), None)], project_id="acme", run_id="r1", seen_at=T0
    )
    assert (counts.new, counts.duplicates) == (2, 0)
    assert store.get_finding("acme", finding_id("acme", parsed(2).fingerprint)) == finding(2)


def test_the_same_fingerprint_in_a_later_run_is_one_finding_seen_twice(stores: Stores) -> None:
    store = stores.findings
    project_with_run(store)
    store.save_run(Run(id="r2", project_id="acme", started_at=T0 + timedelta(days=1)))
    store.save_findings([finding(1), finding(2)])
    later = T0 + timedelta(days=1)
    counts = store.save_findings(
        [finding(1, "r2", at=later), finding(3, "r2", at=later), finding(3, "r2", at=later)]
    )
    assert (counts.new, counts.duplicates) == (1, 2)
    again = store.get_finding("acme", finding(1).id)
    assert again is not None
    assert (
        again.run_id,
        again.last_run_id,
        again.first_seen,
        again.last_seen,
        again.occurrences,
    ) == (
        "r1",
        "r2",
        T0,
        later,
        2,
    )
    in_r2 = store.list_findings(FindingFilter("acme", run_id="r2")).findings
    assert sorted(f.rule_id for f in in_r2) == ["rule-1", "rule-3"]
    in_r1 = store.list_findings(FindingFilter("acme", run_id="r1")).findings
    assert sorted(f.rule_id for f in in_r1) == ["rule-1", "rule-2"]


def test_a_finding_whose_run_is_not_of_its_project_is_refused_and_the_batch_kept_out(
    stores: Stores,
) -> None:
    store = stores.findings
    project_with_run(store)
    project_with_run(store, "other", "r9")
    with pytest.raises(FindingsError) as info:
        store.save_findings([finding(1), finding(2, "r9")])
    assert info.value.code is ErrorCode.FINDINGS_INVALID
    assert store.list_findings(FindingFilter("acme")).findings == []


def test_findings_filter_by_severity_scanner_triage_and_resource(stores: Stores) -> None:
    store = stores.findings
    project_with_run(store)
    resource = stores.resources.add_resource(new_resource("acme", "https://app.example.test/p"))
    store.save_parsed(
        [
            (parsed(1, severity=Severity.CRITICAL), resource.id),
            (parsed(2, severity=Severity.LOW), None),
            (parsed(3, severity=Severity.HIGH, scanner="katana"), None),
        ],
        project_id="acme", run_id="r1", seen_at=T0,
    )  # fmt: skip
    store.triage_finding("acme", finding(2).id, TriageState.ACCEPTED, actor="erin")

    def rules(where: FindingFilter) -> list[str]:
        return [f.rule_id for f in store.list_findings(where).findings]

    assert rules(FindingFilter("acme", severities=(Severity.CRITICAL, Severity.HIGH))) == [
        "rule-1",
        "rule-3",
    ]
    assert rules(FindingFilter("acme", scanner="katana")) == ["rule-3"]
    assert rules(FindingFilter("acme", triage_state=TriageState.ACCEPTED)) == ["rule-2"]
    assert rules(FindingFilter("acme", resource_id=resource.id)) == ["rule-1"]
    assert rules(FindingFilter("nobody")) == []


def test_pages_follow_a_cursor_that_stays_valid_while_findings_are_added(stores: Stores) -> None:
    store = stores.findings
    project_with_run(store)
    store.save_findings([finding(n) for n in range(7)])
    first = store.list_findings(FindingFilter("acme"), limit=3)
    assert [f.rule_id for f in first.findings] == ["rule-0", "rule-1", "rule-2"]
    store.save_findings([finding(n) for n in range(7, 9)])
    seen = [f.rule_id for f in first.findings]
    cursor = first.next_cursor
    while cursor is not None:
        page = store.list_findings(FindingFilter("acme"), limit=3, cursor=cursor)
        seen += [f.rule_id for f in page.findings]
        cursor = page.next_cursor
    assert seen == [f"rule-{n}" for n in range(9)]


def test_a_forged_cursor_is_refused(stores: Stores) -> None:
    with pytest.raises(FindingsError) as info:
        stores.findings.list_findings(FindingFilter("acme"), cursor="not-a-cursor")
    assert info.value.code is ErrorCode.FINDINGS_INVALID


def test_triage_changes_are_kept_in_order_with_who_made_them(stores: Stores) -> None:
    store = stores.findings
    project_with_run(store)
    store.save_finding(finding(1))
    first = store.triage_finding(
        "acme", finding(1).id, TriageState.FALSE_POSITIVE, actor="erin", reason="test host"
    )
    assert (first.from_state, first.to_state) == (TriageState.OPEN, TriageState.FALSE_POSITIVE)
    store.triage_finding("acme", finding(1).id, TriageState.OPEN, actor="bob")
    history = store.list_triage_history("acme", finding(1).id)
    assert [(h.actor, h.from_state, h.to_state, h.reason) for h in history] == [
        ("erin", TriageState.OPEN, TriageState.FALSE_POSITIVE, "test host"),
        ("bob", TriageState.FALSE_POSITIVE, TriageState.OPEN, ""),
    ]
    store.save_finding(finding(1))
    kept = store.get_finding("acme", finding(1).id)
    assert kept is not None and kept.triage_state is TriageState.OPEN and kept.occurrences == 2


def test_triaging_an_unknown_finding_names_it(stores: Stores) -> None:
    project_with_run(stores.findings)
    with pytest.raises(FindingsError) as info:
        stores.findings.triage_finding("acme", "f-none", TriageState.FIXED, actor="erin")
    assert info.value.code is ErrorCode.FINDINGS_NOT_FOUND
    assert info.value.details["finding_id"] == "f-none"


def test_deleting_a_project_removes_its_runs_resources_and_findings_only(stores: Stores) -> None:
    store = stores.findings
    project_with_run(store)
    project_with_run(store, "keep", "k1")
    stores.resources.add_resource(new_resource("acme", "10.0.0.0/8"))
    store.save_findings([finding(1)])
    store.triage_finding("acme", finding(1).id, TriageState.FIXED, actor="erin")
    store.save_finding(finding(1, "k1", project="keep"))
    assert store.delete_project("acme") is True
    assert store.delete_project("acme") is False
    assert store.get_project("acme") is None and store.list_runs("acme") == []
    assert store.list_findings(FindingFilter("acme")).findings == []
    assert stores.resources.list_resources("acme") == []
    assert [p.id for p in store.list_projects()] == ["keep"]
    assert len(store.list_findings(FindingFilter("keep")).findings) == 1


def test_runs_need_their_project_and_list_oldest_first(stores: Stores) -> None:
    store = stores.findings
    with pytest.raises(FindingsError) as info:
        store.save_run(Run(id="r1", project_id="ghost", started_at=T0))
    assert info.value.code is ErrorCode.FINDINGS_NOT_FOUND
    project_with_run(store)
    store.save_run(Run(id="r0", project_id="acme", started_at=T0 - timedelta(hours=1)))
    store.save_run(
        Run(id="r1", project_id="acme", started_at=T0, finished_at=T0 + timedelta(minutes=5))
    )
    runs = store.list_runs("acme")
    assert [r.id for r in runs] == ["r0", "r1"]
    assert runs[1].finished_at == T0 + timedelta(minutes=5)


def test_a_fresh_store_has_a_sound_layout_at_the_current_version(stores: Stores) -> None:
    store = stores.findings
    assert store.validate_store_layout() == []
    assert store.get_schema_version() == store.migrate_store() == 2


def test_atomic_write_replaces_a_file_whole_or_not_at_all(stores: Stores, tmp_path: Path) -> None:
    target = tmp_path / "out.sarif"
    assert stores.findings.atomic_write(target, [b"{", b"}"]) == 2

    def failing() -> Iterator[bytes]:
        yield b"half"
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        stores.findings.atomic_write(target, failing())
    assert target.read_bytes() == b"{}"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resources_are_registered_once_per_kind_and_value_and_removed(stores: Stores) -> None:
    project_with_run(stores.findings)
    registry = stores.resources
    host = registry.add_resource(new_resource("acme", "App.Example.Test"))
    assert host.kind is ResourceKind.HOST and host.value == "app.example.test"
    again = registry.add_resource(new_resource("acme", "app.example.test"))
    assert again.id == host.id
    url = registry.add_resource(new_resource("acme", "https://app.example.test/api"))
    assert [r.id for r in registry.list_resources("acme")] == [host.id, url.id]
    assert registry.get_resource("acme", url.id) == url
    assert registry.remove_resource("acme", host.id) is True
    assert registry.remove_resource("acme", host.id) is False
    assert [r.id for r in registry.list_resources("acme")] == [url.id]


def test_a_resource_of_an_unknown_project_is_refused(stores: Stores) -> None:
    with pytest.raises(FindingsError) as info:
        stores.resources.add_resource(new_resource("ghost", "10.1.2.3"))
    assert info.value.code is ErrorCode.FINDINGS_NOT_FOUND


def test_removing_a_resource_unlinks_its_findings(stores: Stores) -> None:
    project_with_run(stores.findings)
    resource = stores.resources.add_resource(new_resource("acme", "app.example.test"))
    stores.findings.save_parsed(
        [(parsed(1), resource.id)], project_id="acme", run_id="r1", seen_at=T0
    )
    stores.resources.remove_resource("acme", resource.id)
    kept = stores.findings.get_finding("acme", finding(1).id)
    assert kept is not None and kept.resource_id is None and kept.title == "Finding 1"


def _set_version(path: Path, version: int, *drop: str) -> None:
    database = SqliteDatabase(path)
    for table in drop:
        database.connect().execute(f"DROP TABLE {table}")
    database.connect().execute(
        "UPDATE schema_versions SET version = ? WHERE component = 'findings'", (version,)
    )
    database.close()


def test_a_sqlite_store_from_an_older_aifr_is_refused_until_migrated(tmp_path: Path) -> None:
    path = tmp_path / "aifr.db"
    SqliteFindingStore(SqliteDatabase(path))
    _set_version(path, 1, "findings_triage", "findings_resources")  # as version 1 left it
    with pytest.raises(StorageError) as info:
        SqliteFindingStore(SqliteDatabase(path))
    assert info.value.code is ErrorCode.STORAGE_SCHEMA_MISMATCH
    assert "aifr findings migrate" in info.value.message
    migrated = SqliteFindingStore(SqliteDatabase(path), migrate=True)
    assert migrated.get_schema_version() == 2 and migrated.validate_store_layout() == []


def test_a_sqlite_store_from_a_newer_aifr_is_refused_naming_the_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "aifr.db"
    SqliteFindingStore(SqliteDatabase(path))
    _set_version(path, 9)
    with pytest.raises(StorageError) as info:
        SqliteFindingStore(SqliteDatabase(path), migrate=True)
    assert info.value.code is ErrorCode.STORAGE_SCHEMA_MISMATCH
    assert "upgrade aifr" in info.value.message


def test_a_sqlite_store_missing_a_table_says_which(tmp_path: Path) -> None:
    database = SqliteDatabase(tmp_path / "aifr.db")
    store = SqliteFindingStore(database)
    database.connect().execute("DROP TABLE findings_triage")
    assert store.validate_store_layout() == ["table findings_triage is missing"]


def test_a_lone_surrogate_from_scanner_json_is_stored_not_crashed_on(stores: Stores) -> None:
    store = stores.findings
    project_with_run(store)
    odd = msgspec.structs.replace(
        parsed(1), title="bad \ud800 name", matched_at="https://a.test/\udc00"
    )
    counts = store.save_parsed([(odd, None)], project_id="acme", run_id="r1", seen_at=T0)
    assert counts.new == 1
    kept = store.get_finding("acme", finding(1).id)
    assert kept is not None and kept.title.startswith("bad ") and kept.matched_at is not None
