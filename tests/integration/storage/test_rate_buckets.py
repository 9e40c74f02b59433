"""The shared rate buckets on SQLite and PostgreSQL: leases, refill, waits, many threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aifr.audit import AuditLedger
from aifr.storage.postgres.database import PostgresDatabase
from aifr.storage.postgres.rates import PostgresRateStore
from aifr.storage.sqlite.database import SqliteDatabase
from aifr.storage.sqlite.rates import SqliteRateStore

RateStore = SqliteRateStore | PostgresRateStore


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RateStore]:
    if request.param == "sqlite":
        database = SqliteDatabase(tmp_path / "state.db", synchronous="NORMAL")
        yield SqliteRateStore(database)
        database.close()
        return
    pg: tuple[PostgresDatabase, AuditLedger] = request.getfixturevalue("pg_state")
    yield PostgresRateStore(pg[0])


def test_leases_never_take_more_than_the_bucket_holds(store: RateStore) -> None:
    take = {"rate_per_s": 1.0, "burst": 10, "now": 1000.0}
    assert store.take("k", want=4, **take) == (4, 0.0)
    assert store.take("k", want=4, **take) == (4, 0.0)
    assert store.take("k", want=4, **take) == (2, 0.0)
    taken, wait = store.take("k", want=4, **take)
    assert taken == 0
    assert wait == pytest.approx(1.0)
    assert store.take("other", want=1, **take) == (1, 0.0)  # its own bucket


def test_the_bucket_refills_with_time_up_to_the_burst(store: RateStore) -> None:
    assert store.take("k", rate_per_s=2.0, burst=4, now=0.0, want=4) == (4, 0.0)
    assert store.take("k", rate_per_s=2.0, burst=4, now=1.0, want=4) == (2, 0.0)
    assert store.take("k", rate_per_s=2.0, burst=4, now=100.0, want=10) == (4, 0.0)
    taken, wait = store.take("k", rate_per_s=2.0, burst=4, now=100.25, want=1)
    assert (taken, wait) == (0, pytest.approx(0.25))
    # a clock behind the stored stamp refills nothing (never backwards)
    assert store.take("k", rate_per_s=2.0, burst=4, now=50.0, want=1)[0] == 0


def test_concurrent_takers_share_one_bucket_exactly(store: RateStore) -> None:
    granted: list[int] = []
    lock = threading.Lock()

    def spend() -> None:
        for _ in range(20):
            taken, _ = store.take("shared", rate_per_s=0.001, burst=50, now=5.0, want=3)
            with lock:
                granted.append(taken)

    threads = [threading.Thread(target=spend) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 50
