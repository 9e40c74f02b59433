"""The ledger on a real SQLite file: durability, group commit, concurrency, reads."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aifr.audit import AuditEvent, AuditLedger, AuditRecord, ChainBuilder
from aifr.errors import ErrorCode, StorageError
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.audit import SqliteAuditStore, open_sqlite_ledger


@pytest.fixture
def database(tmp_path: Path) -> Iterator[SqliteDatabase]:
    db = SqliteDatabase(tmp_path / "aifr.db")
    yield db
    db.close()


def _event(n: int, principal: str = "alice") -> AuditEvent:
    return AuditEvent(
        kind="execution",
        principal=principal,
        capability_id="io.fs.read_file",
        capability_fingerprint="f" * 64,
        decision="ALLOW",
        rule_id="allow-reads",
        inputs_digest="d" * 64,
        outcome="ok",
        trace_id=f"trace-{n}",
        details={"n": n},
    )


def _wait_until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.001)


def test_an_appended_record_is_on_disk_for_a_fresh_connection_and_chains(
    database: SqliteDatabase,
) -> None:
    ledger = open_sqlite_ledger(database)
    first = ledger.append(_event(1))
    second = ledger.append(_event(2, principal="bob"))
    assert (first.seq, second.seq, second.prev_hash) == (1, 2, first.hash)
    other = open_sqlite_ledger(SqliteDatabase(database.path))
    assert [r.id for r in other.records()] == [first.id, second.id]
    assert other.get(second.id) == second
    assert other.verify().ok


def test_secrets_in_details_are_redacted_before_they_are_hashed_and_stored(
    database: SqliteDatabase,
) -> None:
    ledger = open_sqlite_ledger(database)
    record = ledger.append(
        AuditEvent(
            kind="config.changed",
            principal="ops",
            details={"db_password": "pw1", "note": "Bearer abcdefghijklmnop1234"},
        )
    )
    stored = database.new_connection().execute("SELECT details FROM audit_records").fetchone()[0]
    assert "pw1" not in stored and "abcdefghijklmnop1234" not in stored
    assert record.event.details["db_password"] == "[REDACTED]"
    assert ledger.verify().ok


def test_append_in_joins_the_callers_transaction_and_vanishes_on_rollback(
    database: SqliteDatabase,
) -> None:
    ledger = open_sqlite_ledger(database)
    ledger.append(_event(1))
    with database.transaction() as conn:
        conn.execute("CREATE TABLE side (v TEXT)")
        conn.execute("INSERT INTO side VALUES ('x')")
        kept = ledger.append_in(conn, _event(2))
    with pytest.raises(RuntimeError), database.transaction() as conn:
        ledger.append_in(conn, _event(3))
        raise RuntimeError("caller fails after appending")
    assert [r.seq for r in ledger.records()] == [1, 2]
    assert kept.seq == 2
    after = ledger.append(_event(4))
    assert after.seq == 3 and after.prev_hash == kept.hash
    assert ledger.verify().ok


def test_append_in_outside_a_transaction_is_refused(database: SqliteDatabase) -> None:
    ledger = open_sqlite_ledger(database)
    with pytest.raises(Exception) as caught:
        ledger.append_in(database.connect(), _event(1))
    assert caught.value.code == ErrorCode.AUDIT_FAILED  # type: ignore[attr-defined]


class _GatedStore(SqliteAuditStore):
    """The real SQLite store whose first commit waits for a gate; counts transactions."""

    def __init__(self, database: SqliteDatabase) -> None:
        super().__init__(database)
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.transactions = 0

    def append(self, build: ChainBuilder) -> list[AuditRecord]:
        self.transactions += 1
        if self.transactions == 1:
            self.entered.set()
            self.gate.wait(10)
        return super().append(build)


def test_appends_arriving_during_a_commit_share_the_next_transaction(
    database: SqliteDatabase,
) -> None:
    store = _GatedStore(database)
    ledger = AuditLedger(store)
    results: list[AuditRecord] = []
    threads = [
        threading.Thread(target=lambda n=n: results.append(ledger.append(_event(n))))
        for n in range(8)
    ]
    threads[0].start()
    assert store.entered.wait(10)
    for thread in threads[1:]:
        thread.start()
    _wait_until(lambda: ledger.pending() == 7)
    assert not results  # nobody returns before their record is committed
    store.gate.set()
    for thread in threads:
        thread.join(10)
    assert store.transactions == 2
    assert (
        ledger.stats.commits == 2 and ledger.stats.largest_batch == 7 and ledger.stats.appends == 8
    )
    assert sorted(r.seq for r in results) == list(range(1, 9))
    assert ledger.verify().ok


def test_many_threads_appending_at_once_keep_one_valid_chain_with_fewer_commits(
    database: SqliteDatabase,
) -> None:
    ledger = open_sqlite_ledger(database)
    per_thread: dict[int, list[int]] = {}

    def work(worker: int) -> None:
        per_thread[worker] = [
            ledger.append(_event(n, principal=f"w{worker}")).seq for n in range(150)
        ]

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(seqs == sorted(seqs) for seqs in per_thread.values())
    assert sorted(s for seqs in per_thread.values() for s in seqs) == list(range(1, 1201))
    report = ledger.verify()
    assert report.ok and report.checked == 1200
    assert ledger.stats.appends == 1200 and ledger.stats.commits <= 1200


_CHILD = """
import sys, threading
from aifr.audit import AuditEvent
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.audit import open_sqlite_ledger
ledger = open_sqlite_ledger(SqliteDatabase(sys.argv[1]))
def work(t):
    for n in range(100):
        ledger.append(AuditEvent(kind="execution", principal=sys.argv[2], details={"t": t, "n": n}))
threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
[t.start() for t in threads]
[t.join() for t in threads]
"""


def test_two_processes_and_this_one_appending_together_keep_one_valid_chain(
    database: SqliteDatabase,
) -> None:
    ledger = open_sqlite_ledger(database)
    children = [
        subprocess.Popen([sys.executable, "-c", _CHILD, str(database.path), name])
        for name in ("proc-a", "proc-b")
    ]
    for n in range(100):
        ledger.append(_event(n, principal="parent"))
    assert [child.wait(60) for child in children] == [0, 0]
    report = ledger.verify()
    assert report.ok and report.checked == 700
    counts = {
        p: sum(1 for _ in ledger.records(principal=p)) for p in ("proc-a", "proc-b", "parent")
    }
    assert counts == {"proc-a": 300, "proc-b": 300, "parent": 100}


def test_records_filter_by_time_range_and_principal_and_read_newest_first(
    database: SqliteDatabase,
) -> None:
    ledger = open_sqlite_ledger(database)
    for n in range(30):
        ledger.append(_event(n, principal="alice" if n % 2 else "bob"))
    stamps = [r.ts for r in ledger.records()]
    since, until = stamps[10], stamps[20]
    window = list(ledger.records(since=since, until=until))
    assert window and all(since <= r.ts < until for r in window)
    assert {r.event.principal for r in ledger.records(principal="alice")} == {"alice"}
    assert [r.seq for r in ledger.records(principal="bob", limit=3, newest_first=True)] == [
        29,
        27,
        25,
    ]
    assert [r.seq for r in ledger.records(after_seq=27)] == [28, 29, 30]
    assert list(ledger.records(since="2999-01-01")) == []


def test_a_failed_commit_reaches_every_waiter_as_a_storage_error(tmp_path: Path) -> None:
    database = SqliteDatabase(tmp_path / "aifr.db")
    ledger = open_sqlite_ledger(database)
    ledger.append(_event(0))
    database.new_connection().execute("DROP TABLE audit_records")
    with pytest.raises(StorageError) as caught:
        ledger.append(_event(1))
    assert caught.value.code == ErrorCode.STORAGE_FAILED
    assert ledger.stats.commits == 2  # the failed transaction released leadership


_CTRL_C_CHILD = """
import json, signal, sys, threading, time
from aifr.audit import AuditEvent, AuditLedger
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.audit import SqliteAuditStore

class GatedStore(SqliteAuditStore):
    # The real store whose first commit waits for a gate.
    def __init__(self, database):
        super().__init__(database)
        self.entered, self.gate, self.transactions = threading.Event(), threading.Event(), 0
    def append(self, build):
        self.transactions += 1
        if self.transactions == 1:
            self.entered.set()
            self.gate.wait(30)
        return super().append(build)

def event(n):
    return AuditEvent(kind="execution", principal="alice", details={"n": n})

def wait_until(condition):
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)

# Python leaves SIGINT ignored when it started ignored (a background job of a
# non-interactive shell, as CI may run this suite); this scenario is a Ctrl-C that lands.
signal.signal(signal.SIGINT, signal.default_int_handler)
store = GatedStore(SqliteDatabase(sys.argv[1]))
ledger = AuditLedger(store)
first = threading.Thread(target=lambda: ledger.append(event(1)))
first.start()
assert store.entered.wait(30)
interrupted = threading.Event()

def interrupt_then_release():
    wait_until(lambda: ledger.pending() == 1)
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    wait_until(lambda: ledger.pending() == 1 and interrupted.is_set())
    store.gate.set()

helper = threading.Thread(target=interrupt_then_release)
helper.start()
try:
    ledger.append(event(2))  # this thread waits behind the gated commit
    outcome = "returned"
except KeyboardInterrupt:
    outcome = "interrupted"
interrupted.set()
helper.join(30)
first.join(30)
after = ledger.append(event(3))  # would hang forever if leadership were lost
print(json.dumps({"outcome": outcome, "after": after.seq, "valid": ledger.verify().ok,
                  "checked": ledger.verify().checked, "pending": ledger.pending()}))
"""


def test_a_waiting_appender_interrupted_by_ctrl_c_never_stalls_the_others(
    database: SqliteDatabase,
) -> None:
    # In a process of its own: Ctrl-C reaches Python code only in the interpreter's main
    # thread, and a test runner (its workers, its plugins) may own that thread here; and
    # only where SIGINT is handled, which the child sees to (it may start out ignored).
    child = subprocess.run(
        [sys.executable, "-c", _CTRL_C_CHILD, str(database.path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    # The interrupted record still rode the next batch: 1, 2 (interrupted), then 3.
    assert json.loads(child.stdout) == {
        "outcome": "interrupted",
        "after": 3,
        "valid": True,
        "checked": 3,
        "pending": 0,
    }


def test_two_ledgers_taking_turns_on_one_file_chain_onto_each_others_records(
    database: SqliteDatabase,
) -> None:
    first = open_sqlite_ledger(database)
    second = open_sqlite_ledger(SqliteDatabase(database.path))
    appended = [(first if n % 3 else second).append(_event(n)) for n in range(12)]
    assert [r.seq for r in appended] == list(range(1, 13))
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(appended))
    assert first.verify().ok and first.verify().checked == 12
