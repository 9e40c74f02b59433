"""The scale-out benchmark's SQLite rows: timed on a settled WAL, and what they report.

``benchmarks.workflow_bench`` times runs at once on a database whose WAL has reached its
working size (a fresh file's first commits grow it, and those cost more than a running
worker's); the profile it prints must count every step, the group commit's batches and
the process's CPU.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.workflow_bench import STEPS, AifrBench, concurrent_profile


def test_settle_fills_the_wal_to_its_working_size_and_then_costs_nothing(tmp_path: Path) -> None:
    bench = AifrBench(tmp_path, "auto", "OFF")
    try:
        bench.run()
        wal = Path(f"{bench.database.path}-wal")
        assert wal.stat().st_size < 4_000_000
        assert bench.settle() > 0
        settled = wal.stat().st_size
        assert settled >= 32 + 1000 * (24 + 4096)
        assert bench.settle() == 0
        bench.run()
        assert wal.stat().st_size == settled  # written over from its start, not grown
    finally:
        bench.close()


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
