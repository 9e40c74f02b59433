"""The scale-out benchmark's SQLite rows: timed on a settled WAL, and what they report.

``benchmarks.workflow_bench`` times runs at once on a database whose WAL has reached its
working size (a fresh file's first commits grow it, and those cost more than a running
worker's), and the CPython floor it is held to (``benchmarks.floor``) settles its files
the same way; the profile it prints must count every step, the group commit's batches
and the process's CPU.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from benchmarks import floor as floor_module
from benchmarks.floor import LeanFloor, floors_on_threads
from benchmarks.group_floor import (
    GroupedLeanFloor,
    LeanBatching,
    WeightedGroupedFloor,
    grouped_floor_on_threads,
    weighted_floor_rows,
)
from benchmarks.scaleout_bench import (
    ACTIVE,
    PAIRED,
    PAIRED_DBOS,
    PAIRED_SLICES,
    SQLITE_CEILING_VS_WEIGHTED,
    SQLITE_VS_WEIGHTED_FLOOR,
    STEP_VS_FLOOR,
    VS_DBOS,
    Drained,
    Measured,
    _all_completed,
    _in_turns,
    _project,
    _queue,
    _scalar,
    _wait_stopped,
    paired_with_floor,
    round_by_round,
    round_table,
    verdicts,
)
from benchmarks.workflow_bench import STEPS, AifrBench, concurrent_profile

WORKING_WAL = 32 + 1000 * (24 + 4096)
"""A settled WAL's size at SQLite's defaults: its header and 1,000 frames of 4 KiB pages."""


def test_settle_fills_the_wal_to_its_working_size_and_then_costs_nothing(tmp_path: Path) -> None:
    bench = AifrBench(tmp_path, "auto", "OFF")
    try:
        bench.run()
        wal = Path(f"{bench.database.path}-wal")
        assert wal.stat().st_size < 4_000_000
        assert bench.settle() > 0
        settled = wal.stat().st_size
        assert settled >= WORKING_WAL
        assert bench.settle() == 0
        bench.run()
        assert wal.stat().st_size == settled  # written over from its start, not grown
    finally:
        bench.close()


def test_the_floor_settles_its_file_as_aifr_does(tmp_path: Path) -> None:
    floor = LeanFloor(tmp_path / "floor.db", "OFF")
    try:
        floor.run(STEPS)
        wal = Path(f"{floor.path}-wal")
        assert wal.stat().st_size < WORKING_WAL
        assert floor.settle(STEPS) > 0
        settled = wal.stat().st_size
        assert settled >= WORKING_WAL
        assert floor.settle(STEPS) == 0
        floor.run(STEPS)
        assert wal.stat().st_size == settled
    finally:
        floor.close()


def test_the_floor_on_threads_is_timed_on_settled_files(monkeypatch: pytest.MonkeyPatch) -> None:
    settled: list[int] = []
    real_settle = LeanFloor.settle

    def settle(floor: LeanFloor, steps: int) -> int:
        runs = real_settle(floor, steps)
        settled.append(Path(f"{floor.path}-wal").stat().st_size)
        return runs

    monkeypatch.setattr(floor_module.LeanFloor, "settle", settle)
    assert floors_on_threads(2, 1, STEPS, "OFF") > 0
    assert len(settled) == 2
    assert min(settled) >= WORKING_WAL


def test_writers_that_arrive_during_a_commit_share_the_next_one(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "batch.db", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (writer TEXT)")
    batching = LeanBatching(conn)
    first_inside, let_first_commit = threading.Event(), threading.Event()

    def first(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES ('first')")
        first_inside.set()
        let_first_commit.wait(10)

    writers = [threading.Thread(target=batching.write, args=(first,))]
    writers[0].start()
    assert first_inside.wait(10)
    for name in ("second", "third"):
        writer = threading.Thread(
            target=batching.write,
            args=(lambda c, name=name: c.execute("INSERT INTO t VALUES (?)", (name,)),),
        )
        writer.start()
        writers.append(writer)
    deadline = time.monotonic() + 10
    while len(batching._queue) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    let_first_commit.set()
    for writer in writers:
        writer.join(10)
    assert batching.jobs == 3
    assert batching.commits == 2  # the two that queued shared one transaction
    assert sorted(row[0] for row in conn.execute("SELECT writer FROM t")) == [
        "first",
        "second",
        "third",
    ]
    conn.close()


def test_the_grouped_floor_keeps_one_chain_and_finishes_every_run(tmp_path: Path) -> None:
    floor = GroupedLeanFloor(tmp_path / "grouped.db", "OFF")
    try:
        workers = [
            threading.Thread(target=lambda: [floor.run(STEPS) for _ in range(3)]) for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        conn = floor.conn
        records = conn.execute(
            "SELECT seq, prev_hash, hash FROM floor_audit ORDER BY seq"
        ).fetchall()
        assert [seq for seq, _, _ in records] == list(range(1, 4 * 3 * STEPS + 1))
        assert all(row[1] == before[2] for before, row in itertools.pairwise(records))
        assert conn.execute(
            "SELECT count(*) FROM floor_steps WHERE state != 'completed'"
        ).fetchone() == (0,)
        assert conn.execute("SELECT count(*), min(state) FROM floor_runs").fetchone() == (
            12,
            "completed",
        )
        assert floor.batching.jobs == 4 * 3 * (STEPS + 1)
        assert floor.batching.commits <= floor.batching.jobs
    finally:
        floor.close()
    assert grouped_floor_on_threads(2, 1, STEPS, "OFF") > 0


def test_a_drain_polls_the_queues_index_and_refuses_a_row_whose_runs_did_not_complete(
    tmp_path: Path,
) -> None:
    from aifr.app import build_app

    _project(tmp_path)
    app = build_app(tmp_path)
    try:
        spec = app.workflow("ten")
        app.workflows.start(spec, {}, "bench")
        database = app.settings.sqlite_path
        assert database is not None
        with contextlib.closing(sqlite3.connect(database)) as conn:

            def count(query: str) -> int:
                return _scalar(conn, query)

            plan = " ".join(str(row) for row in conn.execute(f"EXPLAIN QUERY PLAN {ACTIVE}"))
            assert "SEARCH wf_runs USING" in plan  # an index probe, not a scan of every run
            assert "SCAN wf_runs" not in plan
            assert count(ACTIVE) == 0
            _all_completed(count)  # the one run completed: the row stands
            _queue(app, 2)
            assert count(ACTIVE) == 1
            conn.execute("UPDATE wf_runs SET state = 'failed' WHERE state = 'pending'")
            conn.commit()
            assert count(ACTIVE) == 0  # the poll stops: nothing is left to drive
            with pytest.raises(RuntimeError, match="2 runs ended without completing"):
                _all_completed(count)
    finally:
        app.close()


def test_a_concurrency_profile_counts_every_step_and_shares_commits(tmp_path: Path) -> None:
    bench = AifrBench(tmp_path, "auto", "OFF")
    try:
        bench.run()
        commits, jobs = bench.runs.group.commits, bench.runs.group.jobs
        profile = concurrent_profile(bench, 4, 3)
        done = bench.runs.group.jobs - jobs
        assert done == 4 * 3 * (STEPS + 1)  # a run's start and each step: one grouped write
        assert profile.jobs_per_commit == done / (bench.runs.group.commits - commits)
        assert profile.jobs_per_commit >= 1.0
        assert profile.steps_per_s > 0
        assert profile.user_us > 0
        assert profile.busy > 0
    finally:
        bench.close()


def test_the_weighted_floor_carries_the_asked_weight_and_still_keeps_its_chain(
    tmp_path: Path,
) -> None:
    # A weight well above the lean floor's own step on any host here (30 to 60 µs of user
    # CPU on a fast one; about 150 on the slow one of 2026-11-29, where asking for 150
    # left nothing to burn), so the calibration must add rounds to reach it.
    rows = weighted_floor_rows(400.0, 16, STEPS)
    assert rows.burn_rounds > 0
    # User CPU, counted in ticks on a shared host: calibrated to the asked weight, not exact.
    assert 200 <= rows.cpu_us <= 800
    assert rows.ceiling == pytest.approx(1e6 / rows.cpu_us)
    assert rows.one > 0
    assert rows.eight > 0
    floor = WeightedGroupedFloor(tmp_path / "weighted.db", "OFF", rows.burn_rounds)
    try:
        workers = [threading.Thread(target=floor.run, args=(STEPS,)) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        records = floor.conn.execute(
            "SELECT seq, prev_hash, hash FROM floor_audit ORDER BY seq"
        ).fetchall()
        assert [seq for seq, _, _ in records] == list(range(1, 3 * STEPS + 1))
        assert all(row[1] == before[2] for before, row in itertools.pairwise(records))
    finally:
        floor.close()


def test_the_sqlite_goals_are_read_against_the_weighted_floor_of_the_same_run() -> None:
    result = dict.fromkeys(_VERDICT_KEYS, 1.0)
    result.update(sqlite_1=2_000.0, sqlite_8=2_600.0, sqlite_ceiling=5_000.0)
    without = {v.goal.text for v in verdicts(result)}
    assert SQLITE_VS_WEIGHTED_FLOOR.text not in without  # a run from before the floor
    result.update(
        weighted_floor_1=4_000.0, weighted_floor_8=5_000.0, weighted_floor_ceiling=8_000.0
    )
    read = {v.goal.text: v.ratio for v in verdicts(result)}
    assert read[SQLITE_VS_WEIGHTED_FLOOR.text] == pytest.approx((2_600 / 2_000) / (5_000 / 4_000))
    assert read[SQLITE_CEILING_VS_WEIGHTED.text] == pytest.approx((2_600 / 5_000) / (5_000 / 8_000))


def test_each_goal_is_also_read_in_every_round_from_that_rounds_rows_alone() -> None:
    def round_of(aifr: float, floor: float) -> dict[str, float]:
        rows = dict.fromkeys((*_VERDICT_KEYS, "sqlite_1", "sqlite_8", "sqlite_ceiling"), 1.0)
        rows.update(aifr_1x1=aifr, pg_floor=floor)
        return rows

    rounds = [round_of(1_000.0, 1_400.0), round_of(500.0, 900.0), round_of(1_200.0, 1_500.0)]
    medians = round_of(1_000.0, 1_400.0)  # each row's median over the three rounds
    spread = {
        (verdict.goal.text, verdict.what): (verdict.ratio, ratios)
        for verdict, ratios in round_by_round(Measured(medians, rounds))
    }
    ratio, each = spread[(STEP_VS_FLOOR.text, "1 worker, --concurrency 1, over the floor")]
    assert ratio == pytest.approx(1.4)
    assert each == pytest.approx([1.4, 1.8, 1.25])
    table = "\n".join(round_table(round_by_round(Measured(medians, rounds))))
    assert "| 1.40x | 1.40, 1.80, 1.25 | 2 of 3 |" in table


def test_the_per_step_goal_is_also_read_on_the_rows_drained_in_turns() -> None:
    rows = dict.fromkeys((*_VERDICT_KEYS, "sqlite_1", "sqlite_8", "sqlite_ceiling"), 1.0)
    before = {(v.goal.text, v.what) for v in verdicts(rows)}
    assert (STEP_VS_FLOOR.text, PAIRED) not in before  # a run from before the paired rows

    rows.update(paired_aifr_1x1=1_000.0, paired_pg_floor=1_300.0, aifr_1x1=1_000.0)
    rows.update(pg_floor=2_600.0)
    read = {(v.goal.text, v.what): v for v in verdicts(rows)}
    paired = read[(STEP_VS_FLOOR.text, PAIRED)]
    assert paired.ratio == pytest.approx(1.3)  # the paired floor over paired aifr, not pg_floor
    assert paired.goal.met(paired.ratio)
    alone = read[(STEP_VS_FLOOR.text, "1 worker, --concurrency 1, over the floor")]
    assert alone.ratio == pytest.approx(2.6)  # the rows drained apart are still read too
    assert not alone.goal.met(alone.ratio)


def test_the_dbos_goal_is_also_read_on_the_rows_run_in_turns() -> None:
    rows = dict.fromkeys((*_VERDICT_KEYS, "sqlite_1", "sqlite_8", "sqlite_ceiling"), 1.0)
    assert (VS_DBOS.text, PAIRED_DBOS) not in {(v.goal.text, v.what) for v in verdicts(rows)}

    rows.update(aifr_1x1=1_000.0, dbos_1=200.0, paired_dbos_aifr_1x1=1_300.0)
    rows.update(paired_dbos_1=200.0)
    read = {(v.goal.text, v.what): v for v in verdicts(rows)}
    paired = read[(VS_DBOS.text, PAIRED_DBOS)]
    assert paired.ratio == pytest.approx(6.5)  # the paired rows, not aifr_1x1 over dbos_1
    assert paired.goal.met(paired.ratio)
    alone = read[(VS_DBOS.text, "1 run at a time each")]
    assert alone.ratio == pytest.approx(5.0)  # the rows run apart are still read too
    assert not alone.goal.met(alone.ratio)


def test_sides_in_turns_alternate_who_goes_first_and_sum_each_side_s_slices() -> None:
    order: list[tuple[str, int]] = []

    def side(name: str, seconds_per_run: float) -> Callable[[int], Drained]:
        def drain(runs: int) -> Drained:
            order.append((name, runs))
            return Drained(runs * STEPS, runs * seconds_per_run, runs * seconds_per_run / 2)

        return drain

    ours, theirs = _in_turns(side("aifr", 0.01), 13, side("dbos", 0.05), 7)

    assert [name for name, _ in order] == ["dbos", "aifr", "aifr", "dbos"] * 3
    assert sorted(runs for name, runs in order if name == "aifr") == [2, 2, 2, 2, 2, 3]
    assert sorted(runs for name, runs in order if name == "dbos") == [1, 1, 1, 1, 1, 2]
    assert (ours.items, theirs.items) == (13 * STEPS, 7 * STEPS)
    assert ours.elapsed_s == pytest.approx(0.13) and theirs.elapsed_s == pytest.approx(0.35)
    assert ours.cpu_s == pytest.approx(0.065)


def test_the_paired_rows_drain_every_run_of_both_sides_and_leave_no_schema(
    tmp_path: Path,
) -> None:
    dsn = os.environ.get("AIFR_TEST_PG_DSN")
    if not dsn:
        pytest.skip("AIFR_TEST_PG_DSN is not set: the paired rows drain on PostgreSQL")
    _project(tmp_path)
    with psycopg.connect(dsn, autocommit=True) as conn:
        schemas = "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'aifr_bench_%%'"
        before = conn.execute(schemas).fetchone()
        runs = PAIRED_SLICES * 2 + 1  # slices of unequal size: none is lost
        ours, theirs = paired_with_floor(dsn, tmp_path, runs)
        assert ours.items == theirs.items == runs * STEPS
        assert ours.elapsed_s > 0 and theirs.elapsed_s > 0
        assert ours.cpu_s > 0 and theirs.cpu_s > 0  # both sides metered
        assert conn.execute(schemas).fetchone() == before  # the worker's and the floor's dropped


def test_a_round_that_measured_other_rows_is_refused() -> None:
    rows = dict.fromkeys((*_VERDICT_KEYS, "sqlite_1", "sqlite_8", "sqlite_ceiling"), 1.0)
    weighted = {**rows, "weighted_floor_1": 1.0, "weighted_floor_8": 1.0}
    weighted["weighted_floor_ceiling"] = 1.0
    with pytest.raises(ValueError, match="other rows"):
        round_by_round(Measured(weighted, [rows]))


_VERDICT_KEYS = (
    "commit_ms aifr_1x1 aifr_1x8 aifr_2x1 aifr_2x8 dbos_1 dbos_8 pg_floor pg_engines_1 "
    "pg_engines_8 inline_1x1 inline_2x1 skip_locked_1 skip_locked_2 pg_floors_1 pg_floors_2 "
    "cores_aifr_1x1 cores_aifr_1x8 floor_threads_1 floor_threads_8 grouped_floor_1 "
    "grouped_floor_8 sqlite_workers_1x1 sqlite_workers_2x4 cpus"
).split()


def test_a_held_worker_is_probed_only_once_every_thread_of_it_is_stopped() -> None:
    # SIGSTOP takes effect later than it is sent: the SQLite rows' probe of the lock
    # waits until every thread of every worker is stopped, and not a moment before.
    code = "import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); print(1, flush=True); time.sleep(60)"
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and worker.stdout.readline()  # both threads up
        with pytest.raises(RuntimeError, match="did not stop"):
            _wait_stopped([worker], timeout_s=0.2)  # running: it never stops by itself
        worker.send_signal(signal.SIGSTOP)
        _wait_stopped([worker])
        tasks = list(Path(f"/proc/{worker.pid}/task").iterdir())
        assert len(tasks) == 2
        for task in tasks:
            assert (task / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")
    finally:
        worker.kill()
        worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()
