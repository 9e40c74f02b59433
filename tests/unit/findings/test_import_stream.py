"""An import hands each batch to the store as a stream: counts, batches and failures stay exact."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aifr.errors import FindingsError
from aifr.findings import ParsedFinding
from aifr.findings.importer import PROGRESS_EVERY, ImportSummary, import_findings
from aifr.findings.models import Project, Run
from aifr.findings.parsers import parse_findings
from aifr.findings.ports import FindingFilter, ResourceRegistry, StoragePort
from aifr.storage.memory.findings import InMemoryFindingStore, InMemoryResourceRegistry
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.findings import SqliteFindingStore, SqliteResourceRegistry


def _line(i: int) -> str:
    record = {
        "template-id": f"tmpl-{i % 7}",
        "info": {"name": "Check", "severity": "low"},
        "type": "http",
        "host": f"h{i}.example.test",
        "matched-at": f"https://h{i}.example.test/",
    }
    return json.dumps(record) + "\n"


def _stores(kind: str, tmp_path: Path) -> tuple[StoragePort, ResourceRegistry]:
    if kind == "memory":
        memory = InMemoryFindingStore()
        return memory, InMemoryResourceRegistry(memory)
    sqlite = SqliteFindingStore(SqliteDatabase(tmp_path / "aifr.db"))
    return sqlite, SqliteResourceRegistry(sqlite)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("findings", [0, 1, 4, 8, 9])
def test_counts_and_batches_are_exact_at_and_around_a_batch_boundary(
    kind: str, findings: int, tmp_path: Path
) -> None:
    # Skipped lines first and after the last batch; finding 0 twice when there are any.
    lines = ["not json\n", _line(0)] + [_line(i) for i in range(findings)] + ["{\n", "[1]\n"]
    store, registry = _stores(kind, tmp_path)
    seen: list[tuple[int, int]] = []

    def on_batch(summary: ImportSummary) -> None:
        seen.append((summary.findings, summary.imported))

    summary = import_findings(
        store,
        registry,
        io.BytesIO("".join(lines).encode()),
        project_id="acme",
        run_id="run-1",
        batch_size=4,
        on_batch=on_batch,
    )
    total = findings + 1
    assert (summary.findings, summary.imported, summary.duplicates) == (
        total,
        max(findings, 1),
        total - max(findings, 1),
    )
    assert summary.skipped_count == 3
    assert [s.line for s in summary.skipped] == [1, len(lines) - 1, len(lines)]
    assert summary.scanner == "nuclei"
    assert [f for f, _ in seen] == [min(4 * (n + 1), total) for n in range(-(-total // 4))]
    listed = store.list_findings(FindingFilter(project_id="acme"), limit=100).findings
    assert len(listed) == summary.imported


def test_the_sqlite_store_reads_the_records_inside_its_transaction(tmp_path: Path) -> None:
    database = SqliteDatabase(tmp_path / "aifr.db")
    store = SqliteFindingStore(database)
    now = datetime.now(UTC)
    store.save_project(Project(id="acme", name="acme", created_at=now))
    store.save_run(Run(id="run-1", project_id="acme", started_at=now))
    with io.BytesIO("".join(_line(i) for i in range(5)).encode()) as stream:
        parsed = [e for e in parse_findings(stream) if isinstance(e, ParsedFinding)]
    in_transaction: list[bool] = []

    def records() -> Iterator[tuple[ParsedFinding, str | None]]:
        for record in parsed:
            in_transaction.append(database.connect().in_transaction)
            yield record, None

    counts = store.save_parsed(records(), project_id="acme", run_id="run-1", seen_at=now)
    assert (counts.new, counts.duplicates) == (5, 0)
    assert in_transaction == [False, True, True, True, True]  # the first is peeked before


class _FailingAfter(io.RawIOBase):
    """A stream that fails (a disk error) once ``limit`` bytes were read."""

    def __init__(self, data: bytes, limit: int) -> None:
        self._data = io.BytesIO(data)
        self._limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]  # RawIOBase
        if self._data.tell() >= self._limit:
            raise OSError("disk error")
        chunk = self._data.read(min(len(buffer), self._limit - self._data.tell()))
        buffer[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_read_failure_inside_a_batch_keeps_the_whole_batches_before_it(
    kind: str, tmp_path: Path
) -> None:
    data = "".join(_line(i) for i in range(2000)).encode()
    store, registry = _stores(kind, tmp_path)
    stream = io.BufferedReader(_FailingAfter(data, len(data) * 7 // 10), buffer_size=4096)
    with pytest.raises(FindingsError, match="disk error"):
        import_findings(store, registry, stream, project_id="acme", run_id="run-1", batch_size=500)
    listed = store.list_findings(FindingFilter(project_id="acme"), limit=5000).findings
    assert len(listed) == 1000  # the failure came in the third batch, near line 1400


def test_progress_is_reported_every_few_thousand_findings_whatever_the_batch(
    tmp_path: Path,
) -> None:
    store, registry = _stores("sqlite", tmp_path)
    lines = "".join(_line(i) for i in range(2 * PROGRESS_EVERY + 7))
    progress: list[int] = []
    batches: list[int] = []
    summary = import_findings(
        store,
        registry,
        io.BytesIO(lines.encode()),
        project_id="acme",
        run_id="run-1",
        batch_seconds=60.0,  # no time limit: the batch is cut by its size only
        on_batch=lambda s: batches.append(s.findings),
        on_progress=progress.append,
    )
    assert summary.findings == 2 * PROGRESS_EVERY + 7
    assert progress == [PROGRESS_EVERY, 2 * PROGRESS_EVERY]
    assert batches == [2 * PROGRESS_EVERY + 7]  # one transaction held all of them


def test_a_batch_ends_when_its_time_is_spent_even_below_its_size(tmp_path: Path) -> None:
    store, registry = _stores("sqlite", tmp_path)
    lines = "".join(_line(i) for i in range(1000))
    batches: list[int] = []
    summary = import_findings(
        store,
        registry,
        io.BytesIO(lines.encode()),
        project_id="acme",
        run_id="run-1",
        batch_size=10_000,
        batch_seconds=0.0,  # spent at once: the clock is read every 256 findings
        on_batch=lambda s: batches.append(s.findings),
    )
    assert (summary.findings, summary.imported) == (1000, 1000)
    assert batches == [256, 512, 768, 1000]


def test_sqlite_import_batches_leave_checkpoints_to_the_background_and_restore_the_setting(
    tmp_path: Path,
) -> None:
    database = SqliteDatabase(tmp_path / "aifr.db")
    store = SqliteFindingStore(database)
    conn = database.connect()
    during: list[int] = []
    import_findings(
        store,
        SqliteResourceRegistry(store),
        io.BytesIO("".join(_line(i) for i in range(PROGRESS_EVERY)).encode()),
        project_id="acme",
        run_id="run-1",
        on_progress=lambda _: during.append(
            conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        ),
    )
    assert during == [0]  # inside the batch's transaction: its commit does not checkpoint
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
