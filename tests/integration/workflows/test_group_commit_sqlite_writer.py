"""SQLite group commit: one writer connection, and no writer of the process ever waits on another.

Every write of the run store (steps, runs, leases, cancel flags, the outbox) goes through
its group commit, and every batch runs on the database's one writer connection
(``SqliteDatabase.writer``). So the threads of one process never meet on SQLite's write
lock: with ``busy_timeout=0`` a writer that would have to wait fails at once with
"database is locked" (instead of sleeping in SQLite's busy handler), and these tests
drive eight runs and a lease renewer at once on such a database without one error.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from wf_env import WfEnv, build_wf_env

from aifr.errors import AifrError
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.runs import SqliteRunStore
from aifr.workflows import RunState, WorkflowBuilder, WorkflowSpec


@pytest.fixture
def no_wait_env(tmp_path: Path) -> Iterator[WfEnv]:
    """The engine at FULL on a database whose connections never wait for the write lock."""
    built = build_wf_env(tmp_path, synchronous="FULL")
    database = built.runs.database
    database.busy_timeout_ms = 0
    database.close()  # connections opened from now on carry busy_timeout=0
    yield built
    built.close()


def _five_steps() -> WorkflowSpec:
    spec = WorkflowBuilder("five").step("a", "test.noop")
    for name in "bcde":
        spec = spec.step(name, "test.noop")
    return spec.build()


def test_eight_runs_and_a_lease_renewer_never_wait_on_sqlites_write_lock(
    no_wait_env: WfEnv,
) -> None:
    runs = no_wait_env.runs
    assert isinstance(runs, SqliteRunStore)
    built = _five_steps()
    engines = [no_wait_env.new_engine() for _ in range(8)]
    states: list[RunState] = []
    errors: list[AifrError] = []
    lock = threading.Lock()
    start = threading.Barrier(len(engines) + 1)
    done = threading.Event()

    def drive(engine: object) -> None:
        start.wait()
        try:
            for _ in range(5):
                view = engine.start(built, {}, "agent")  # type: ignore[attr-defined]
                with lock:
                    states.append(view.state)
        except AifrError as exc:
            with lock:
                errors.append(exc)

    def renew_and_cancel() -> None:
        start.wait()
        try:
            while not done.is_set():
                runs.renew(["no-such-run"], "renewer", 30.0, 0.0)
                runs.request_cancel("no-such-run")
                runs.release("no-such-run", "renewer")
        except AifrError as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=drive, args=(e,)) for e in engines]
    renewer = threading.Thread(target=renew_and_cancel)
    for thread in [*threads, renewer]:
        thread.start()
    for thread in threads:
        thread.join(120)
    done.set()
    renewer.join(60)

    assert errors == []
    assert states == [RunState.COMPLETED] * 40
    assert runs.group.largest_batch > 1
    assert no_wait_env.ledger.verify().ok


def test_grouped_writes_run_on_the_one_writer_connection_whichever_thread_leads(
    tmp_path: Path,
) -> None:
    built = build_wf_env(tmp_path, synchronous="FULL")
    runs = built.runs
    assert isinstance(runs, SqliteRunStore)
    database: SqliteDatabase = runs.database
    seen: list[tuple[sqlite3.Connection, sqlite3.Connection]] = []

    def write() -> None:
        seen.append((runs.group.run(lambda conn: conn), database.connect()))

    threads = [threading.Thread(target=write) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(seen) == 3
    assert {id(grouped) for grouped, _ in seen} == {id(database.writer())}
    assert all(grouped is not own for grouped, own in seen)
    database.close()  # a closed database opens a fresh writer on the next write
    assert runs.group.run(lambda conn: conn) is database.writer()
    built.close()


def test_a_runs_writes_are_one_transaction_per_step_all_on_the_writer(tmp_path: Path) -> None:
    """A lone five-step run: its start, then each step (the last with the run's end)."""
    built = build_wf_env(tmp_path, synchronous="FULL")
    database = built.runs.database
    begins: dict[str, int] = {"writer": 0, "own": 0}

    def count(name: str) -> object:
        def trace(statement: str) -> None:
            if statement.startswith("BEGIN"):
                begins[name] += 1

        return trace

    database.writer().set_trace_callback(count("writer"))  # type: ignore[arg-type]
    database.connect().set_trace_callback(count("own"))  # type: ignore[arg-type]
    commits = built.runs.group.commits

    view = built.engine.start(_five_steps(), {}, "agent")

    assert view.state is RunState.COMPLETED
    assert built.runs.group.commits - commits == 6
    assert begins == {"writer": 6, "own": 0}
    built.close()


def test_a_grouped_write_inside_a_job_fails_at_once_instead_of_waiting_for_itself(
    tmp_path: Path,
) -> None:
    """Every run-store write now queues on the group: one started from inside a job (on
    the leader's own thread) would wait for the leader, itself. It is refused instead,
    and the outer job's error rolls its transaction back."""
    from aifr.errors import StorageError
    from aifr.storage.sqlite.groupcommit import GroupCommit

    database = SqliteDatabase(tmp_path / "state.db")
    database.writer().execute("CREATE TABLE t (v INTEGER)")
    group = GroupCommit(database)

    def nested(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (1)")
        group.run(lambda inner: inner.execute("INSERT INTO t VALUES (2)"))

    with pytest.raises(StorageError, match="inside another grouped write"):
        group.run(nested)
    group.run(lambda conn: conn.execute("INSERT INTO t VALUES (3)"))  # the group still works
    assert [row[0] for row in database.writer().execute("SELECT v FROM t")] == [3]
    database.close()
