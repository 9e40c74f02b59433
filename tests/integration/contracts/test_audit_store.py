"""The ``AuditStore`` contract, run against every adapter (SQLite, PostgreSQL)."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql

from aifr.audit import GENESIS_HASH, AuditEvent, AuditLedger, AuditStore, ChainHead, sign_checkpoint
from aifr.storage.postgres.audit import PostgresAuditStore
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.audit import SqliteAuditStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.pg)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    if request.param == "sqlite":
        database = SqliteDatabase(tmp_path / "aifr.db")
        adapter: AuditStore = SqliteAuditStore(database)
        yield adapter
        adapter.close()
        database.close()
        return
    dsn = os.environ.get("AIFR_TEST_PG_DSN")
    if not dsn:
        pytest.skip("AIFR_TEST_PG_DSN is not set: the PostgreSQL adapter needs a server")
    schema = f"aifr_test_{uuid.uuid4().hex[:12]}"
    adapter = PostgresAuditStore(dsn, schema=schema)
    yield adapter
    adapter.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def _fill(store: AuditStore, principals: list[str]) -> AuditLedger:
    ledger = AuditLedger(store)
    for principal in principals:
        ledger.append(AuditEvent(kind="execution", principal=principal))
    return ledger


def test_an_empty_store_has_the_genesis_head_and_no_records(store: AuditStore) -> None:
    assert store.head() == ChainHead(0, GENESIS_HASH)
    assert list(store.scan()) == []
    assert store.get("au-1-00") is None


def test_appended_records_come_back_in_order_with_the_head_at_the_last(store: AuditStore) -> None:
    ledger = _fill(store, ["a", "b", "a", "c"])
    records = list(store.scan())
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert store.head() == ChainHead(4, records[-1].hash)
    assert store.get(records[2].id) == records[2]
    assert store.get(records[2].id.replace("au-3-", "au-2-")) is None
    assert store.seq_of_hash(records[1].hash) == 2 and store.seq_of_hash("x") is None
    assert ledger.verify().ok


def test_scans_filter_by_principal_and_page_newest_first_with_a_limit(store: AuditStore) -> None:
    _fill(store, ["a", "b"] * 1100)
    assert [r.seq for r in store.scan(principal="b", limit=3, newest_first=True)] == [
        2200,
        2198,
        2196,
    ]
    assert sum(1 for _ in store.scan(principal="a")) == 1100
    assert [r.seq for r in store.scan(after_seq=2198)] == [2199, 2200]
    assert sum(1 for _ in store.scan(limit=1500)) == 1500


def test_checkpoints_are_kept_once_per_seq_and_key(store: AuditStore) -> None:
    _fill(store, ["a"])
    checkpoint = sign_checkpoint(store.head(), Ed25519PrivateKey.generate())
    store.add_checkpoint(checkpoint)
    store.add_checkpoint(checkpoint)
    assert store.checkpoints() == [checkpoint]


def test_shipping_cursors_start_at_zero_and_never_move_back(store: AuditStore) -> None:
    assert store.shipped_seq("nats") == 0
    store.mark_shipped("nats", 10)
    store.mark_shipped("nats", 4)
    store.mark_shipped("http", 2)
    assert (store.shipped_seq("nats"), store.shipped_seq("http")) == (10, 2)


def test_concurrent_appenders_extend_one_chain(store: AuditStore) -> None:
    ledger = AuditLedger(store)
    threads = [
        threading.Thread(
            target=lambda: [ledger.append(AuditEvent(kind="k", principal="p")) for _ in range(60)]
        )
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    report = ledger.verify()
    assert report.ok and report.checked == 360
