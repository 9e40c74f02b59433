"""The WorkerRegistry contract, run against every adapter (SQLite file, PostgreSQL schema)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from test_run_store import _event, _run

from aifr.audit import AuditLedger
from aifr.storage.postgres.runs import PostgresRunStore
from aifr.storage.postgres.workers import PostgresWorkerRegistry
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.audit import SqliteAuditStore
from aifr.storage.sqlite.runs import SqliteRunStore
from aifr.storage.sqlite.workers import SqliteWorkerRegistry
from aifr.storage.worker_rows import FORGET_AFTER_S
from aifr.workflows import RunStore
from aifr.workflows.ports import WorkerInfo, WorkerRegistry
from aifr.workflows.presence import Presence

Stores = tuple[WorkerRegistry, RunStore]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.pg)])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "postgres":
        database, ledger = request.getfixturevalue("pg_state")
        yield PostgresWorkerRegistry(database), PostgresRunStore(database, ledger)
        return
    database = SqliteDatabase(tmp_path / "aifr.db", synchronous="NORMAL")
    yield (
        SqliteWorkerRegistry(database),
        SqliteRunStore(database, AuditLedger(SqliteAuditStore(database))),
    )
    database.close()


def _worker(worker_id: str = "h1:10:aa", at: float = 1000.0, **changes: object) -> WorkerInfo:
    host, pid, _ = worker_id.split(":")
    info = WorkerInfo(worker_id, host, int(pid), 4, "0.1.0", at, at)
    return replace(info, **changes)  # type: ignore[arg-type]


def test_announced_workers_list_newest_first_and_a_left_one_is_gone(stores: Stores) -> None:
    registry, _ = stores
    registry.announce(_worker("h1:10:aa", 1000.0))
    registry.announce(_worker("h2:20:bb", 1005.0, concurrency=8))

    listed = registry.workers(now=1010.0)
    registry.leave("h1:10:aa")

    assert listed == [_worker("h2:20:bb", 1005.0, concurrency=8), _worker("h1:10:aa", 1000.0)]
    assert [w.id for w in registry.workers(now=1010.0)] == ["h2:20:bb"]


def test_seen_refreshes_a_worker_and_tells_when_it_was_forgotten(stores: Stores) -> None:
    registry, _ = stores
    registry.announce(_worker())

    assert registry.seen("h1:10:aa", 1030.0)
    assert not registry.seen("h9:99:zz", 1030.0)
    [worker] = registry.workers(now=1030.0)
    assert worker.seen_at == 1030.0 and worker.started_at == 1000.0


def test_announcing_again_keeps_the_start_and_forgets_workers_unseen_for_a_day(
    stores: Stores,
) -> None:
    registry, _ = stores
    registry.announce(_worker("h1:10:aa", 1000.0))
    registry.announce(_worker("h2:20:bb", 1000.0))
    later = 1000.0 + FORGET_AFTER_S + 1
    registry.seen("h2:20:bb", later - 10)

    registry.announce(_worker("h2:20:bb", 1000.0, seen_at=later))

    [kept] = registry.workers(now=later)
    assert kept.id == "h2:20:bb" and kept.started_at == 1000.0 and kept.seen_at == later


def test_a_worker_counts_the_unexpired_leases_of_every_engine_of_its_process(
    stores: Stores,
) -> None:
    registry, runs = stores
    registry.announce(_worker("h1:10:aa"))
    registry.announce(_worker("h1:100:cc"))  # same host, a pid that starts like 10
    for n in range(4):
        runs.create(_run(f"run-{n}", 100.0 + n), [], _event())
    runs.acquire("run-0", "h1:10:aa", 60.0, now=1000.0)
    runs.acquire("run-1", "h1:10:bb", 60.0, now=1000.0)  # another engine of the same worker
    runs.acquire("run-2", "h1:10:dd", 5.0, now=1000.0)  # expired at 1005
    runs.acquire("run-3", "h1:100:cc", 60.0, now=1000.0)

    held = {w.id: w.runs for w in registry.workers(now=1010.0)}

    assert held == {"h1:10:aa": 2, "h1:100:cc": 1}


def test_presence_announces_refreshes_from_its_thread_and_leaves(stores: Stores) -> None:
    registry, _ = stores
    clock = [1000.0]
    beats = threading.Event()

    def tick() -> float:
        clock[0] += 1.0
        beats.set()
        return clock[0]

    with Presence(registry, _worker(), every_s=0.01, clock=tick):
        assert beats.wait(5)
        deadline = time.monotonic() + 5
        while registry.workers(now=0.0)[0].seen_at <= 1000.0:
            assert time.monotonic() < deadline, "the presence thread never refreshed the row"
            time.sleep(0.01)
        registry.leave("h1:10:aa")  # forgotten meanwhile (as after a day cut off)
        deadline = time.monotonic() + 5
        while not registry.workers(now=0.0):
            assert time.monotonic() < deadline, "a forgotten worker never announced again"
            time.sleep(0.01)
        [back] = registry.workers(now=0.0)
        assert back.started_at == 1000.0

    assert registry.workers(now=0.0) == []


def test_live_on_counts_a_host_s_workers_seen_since_a_time(stores: Stores) -> None:
    # What workflows.overlap_commits = "auto" reads: this host's live workers, cheaply.
    registry, _ = stores
    registry.announce(_worker("h1:10:aa", 1000.0))
    registry.announce(_worker("h1:11:bb", 1000.0))
    registry.announce(_worker("h2:20:cc", 1000.0))
    registry.seen("h1:11:bb", 1040.0)

    assert registry.live_on("h1", since=990.0) == 2
    assert registry.live_on("h1", since=1020.0) == 1  # h1:10 was last seen before
    assert registry.live_on("h2", since=990.0) == 1
    assert registry.live_on("h3", since=0.0) == 0
    registry.leave("h1:11:bb")
    assert registry.live_on("h1", since=1020.0) == 0
