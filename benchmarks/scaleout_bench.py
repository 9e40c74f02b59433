"""Scale-out on PostgreSQL: 10-step workflows driven by 1, 2 and 4 ``aifr worker`` processes.

Run: ``AIFR_TEST_PG_DSN=postgresql://... .venv/bin/python -m benchmarks scaleout`` (or
this file directly). Writes the "## Scale-out (PostgreSQL)" section of docs/benchmarks.md.
Floors measured in the same run, in alternating rounds: one INSERT + COMMIT, and a bare
``FOR UPDATE SKIP LOCKED`` claim-and-complete loop in 1 and 2 processes. Each schema is
made for the run and dropped after. Skips (exit 0) when no PostgreSQL DSN is set.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Scale-out (PostgreSQL)"
STEPS = 10
JOBS = 400

WORKFLOW = "name: ten\nsteps:\n" + "".join(
    f"  - id: s{n}\n    capability: data.json.parse\n    inputs: {{text: '[{n}]'}}\n"
    for n in range(STEPS)
)
POLICY = "version: 1\nrules:\n  - id: data\n    when: {capability: 'data.*'}\n    decision: ALLOW\n"


def _schema_dsn(dsn: str, schema: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"


def _connect(dsn: str, schema: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    return conn


def commit_floor_ms(dsn: str, schema: str, n: int = 500) -> float:
    """Median ms of one small INSERT committed on its own."""
    with _connect(dsn, schema) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS floor_rows (id BIGSERIAL PRIMARY KEY, v TEXT)")
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            conn.execute("INSERT INTO floor_rows (v) VALUES (%s)", ("x" * 200,))
            samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def _claim_loop(dsn: str, schema: str) -> None:
    with _connect(dsn, schema) as conn:
        while True:
            with conn.transaction():
                row = conn.execute(
                    "SELECT id FROM jobs WHERE NOT done ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
                ).fetchone()
                if row is None:
                    return
                conn.execute("UPDATE jobs SET done = true WHERE id = %s", row)


def skip_locked_jobs_per_s(dsn: str, schema: str, processes: int) -> float:
    """Jobs/s of a bare claim-and-complete loop (one transaction per job)."""
    with _connect(dsn, schema) as conn:
        conn.execute("DROP TABLE IF EXISTS jobs")
        conn.execute("CREATE TABLE jobs (id BIGSERIAL PRIMARY KEY, done BOOLEAN NOT NULL)")
        conn.execute("INSERT INTO jobs (done) SELECT false FROM generate_series(1, %s)", (JOBS,))
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_claim_loop, args=(dsn, schema)) for _ in range(processes)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return JOBS / (time.perf_counter() - started)


def _project(directory: Path) -> None:
    aifr = str(Path(sys.executable).parent / "aifr")
    subprocess.run([aifr, "init", str(directory)], check=True, capture_output=True)
    (directory / "policies" / "default.yaml").write_text(POLICY)
    (directory / "workflows" / "ten.yaml").write_text(WORKFLOW)


def aifr_steps_per_s(dsn: str, directory: Path, processes: int, runs: int) -> float:
    """Steps/s of ``processes`` idle ``aifr worker`` processes draining ``runs`` queued runs."""
    from aifr.app import build_app

    schema = f"aifr_bench_{uuid.uuid4().hex[:10]}"
    url = _schema_dsn(dsn, schema)
    env = {**os.environ, "AIFR_DATABASE_URL": url}
    os.environ["AIFR_DATABASE_URL"] = url
    app = build_app(directory)
    aifr = str(Path(sys.executable).parent / "aifr")
    workers = [
        subprocess.Popen(
            [aifr, "worker", "--poll", "0.05", "-p", str(directory)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    try:
        with psycopg.connect(dsn, autocommit=True) as probe:
            deadline = time.monotonic() + 180
            while probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%%'"
            ).fetchone() < (processes,):
                if time.monotonic() > deadline:
                    raise RuntimeError("workers did not start")
                time.sleep(0.05)
        spec = app.workflow("ten")
        started = time.perf_counter()
        for _ in range(runs):
            app.workflows.start(spec, {}, "bench", execute=False)
        with _connect(dsn, schema) as conn:
            while conn.execute(
                "SELECT count(*) FROM wf_runs WHERE state <> 'completed'"
            ).fetchone() != (0,):
                time.sleep(0.01)
        elapsed = time.perf_counter() - started
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)
        app.close()
        os.environ.pop("AIFR_DATABASE_URL", None)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return runs * STEPS / elapsed


def measure(dsn: str, runs: int, rounds: int) -> dict[str, float]:
    """Alternating rounds of every row; the median of each."""
    floor_schema = f"aifr_bench_floor_{uuid.uuid4().hex[:8]}"
    directory = Path(tempfile.mkdtemp(prefix="aifr-scaleout-"))
    samples: dict[str, list[float]] = {}
    try:
        _project(directory)
        for _ in range(rounds):
            rows = {
                "commit_ms": commit_floor_ms(dsn, floor_schema),
                "skip_locked_1": skip_locked_jobs_per_s(dsn, floor_schema, 1),
                "skip_locked_2": skip_locked_jobs_per_s(dsn, floor_schema, 2),
                "aifr_1": aifr_steps_per_s(dsn, directory, 1, runs),
                "aifr_2": aifr_steps_per_s(dsn, directory, 2, runs),
                "aifr_4": aifr_steps_per_s(dsn, directory, 4, runs),
            }
            for key, value in rows.items():
                samples.setdefault(key, []).append(value)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(floor_schema))
            )
    return {key: statistics.median(values) for key, values in samples.items()}


def write_docs(result: dict[str, float], runs: int, rounds: int) -> str:
    """Replace (or add) this benchmark's section of docs/benchmarks.md; returns it."""
    step_ms = 1000 / result["aifr_1"]
    section = (
        f"{SECTION}\n\n"
        f"`benchmarks/scaleout_bench.py`: {runs} queued 10-step workflows (`data.json.parse`"
        " steps) drained by idle `aifr worker` processes on the local PostgreSQL, against "
        f"the floors, medians of {rounds} alternating rounds on a shared 2-core host (busy "
        "with other work: read ratios, not absolute numbers).\n\n"
        "| row | result |\n|---|---|\n"
        f"| floor: one INSERT + COMMIT | {result['commit_ms']:.2f} ms |\n"
        f"| floor: bare SKIP LOCKED claim-and-complete, 1 process | "
        f"{result['skip_locked_1']:,.0f} jobs/s |\n"
        f"| floor: bare SKIP LOCKED claim-and-complete, 2 processes | "
        f"{result['skip_locked_2']:,.0f} jobs/s |\n"
        f"| aifr, 1 worker process | {result['aifr_1']:,.0f} steps/s ({step_ms:.2f} ms/step, "
        f"{step_ms / result['commit_ms']:.1f}x one commit) |\n"
        f"| aifr, 2 worker processes | {result['aifr_2']:,.0f} steps/s "
        f"({result['aifr_2'] / result['aifr_1']:.2f}x one) |\n"
        f"| aifr, 4 worker processes | {result['aifr_4']:,.0f} steps/s "
        f"({result['aifr_4'] / result['aifr_1']:.2f}x one) |\n\n"
        "The floor's own loop reached "
        f"{result['skip_locked_2'] / result['skip_locked_1']:.2f}x with 2 processes in the same "
        "run: where that is far below 2x, the host (not the queue) bounds the scaling. "
        "Goals (issue 24): per step within 1.5x of one commit; 2 workers at least 1.7x one. "
        "Each step is a governed invocation (policy, audit record in the step's own "
        "commit under the chain lock) plus the run's writes; DBOS on the same PostgreSQL is "
        "not measured here yet.\n"
    )
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOCS.write_text(text, encoding="utf-8")
    return section


def main() -> int:
    """Measure, print, and write the docs section unless ``--no-docs``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="workflows per row and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-docs", action="store_true", help="print, do not write the docs")
    args = parser.parse_args(sys.argv[2:] if sys.argv[1:2] == ["scaleout"] else sys.argv[1:])
    dsn = os.environ.get("AIFR_BENCH_PG_DSN") or os.environ.get("AIFR_TEST_PG_DSN")
    if not dsn:
        print("scaleout: no AIFR_BENCH_PG_DSN / AIFR_TEST_PG_DSN set; skipped")
        return 0
    result = measure(dsn, args.runs, args.rounds)
    for key, value in result.items():
        print(f"{key}: {value:,.2f}")
    if not args.no_docs:
        print(write_docs(result, args.runs, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
