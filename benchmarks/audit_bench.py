"""Audit ledger: raw SQLite WAL commit floor vs ``AuditLedger.append``, 1 and 8 threads.

Run: ``.venv/bin/python -m benchmarks audit`` (or this file directly). Writes the
"## Audit ledger" section of docs/benchmarks.md. The functions here are reusable by the
invoke benchmark: ``raw_commit_floor`` gives the floor a governed call is compared with.

Issue 5 targets: a single append within 1.3x of one raw commit at the same synchronous
level; at least 5,000 durable appends/s from 8 threads thanks to group commit.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import re
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from aifr.audit import AuditEvent, AuditLedger
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.audit import open_sqlite_ledger
from benchmarks.threads import timed_on_threads

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Audit ledger"
SINGLE_N = int(os.environ.get("AIFR_BENCH_AUDIT_N", "2000"))
THREADS = 8
PER_THREAD = int(os.environ.get("AIFR_BENCH_AUDIT_PER_THREAD", "1500"))
ROUNDS = 20

EVENT = AuditEvent(
    kind="execution",
    principal="agent-7",
    capability_id="io.fs.read_file",
    capability_fingerprint="9f" * 32,
    decision="ALLOW",
    rule_id="allow-reads",
    inputs_digest="5e" * 32,
    outcome="ok",
    trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    request_id="req-0123456789abcdef",
    details={"status": "ok", "version": "1.0.0", "duration_s": 0.000123},
)
# The raw row carries what an audit row carries (same width), minus the ledger's work.
RAW_PAYLOAD = "x" * 480


@dataclass(frozen=True, slots=True)
class Latency:
    """Per-operation latency in microseconds."""

    median_us: float
    p99_us: float
    ops_per_s: float


def _latency(samples: list[float], wall_s: float) -> Latency:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return Latency(statistics.median(ordered) * 1e6, p99 * 1e6, len(samples) / wall_s)


def _raw_connection(database: SqliteDatabase) -> sqlite3.Connection:
    """A connection with aifr's pragmas and a bare table for raw commits."""
    conn = database.new_connection()
    conn.execute(
        "CREATE TABLE IF NOT EXISTS bench_raw (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)"
    )
    return conn


def _raw_commits(conn: sqlite3.Connection, n: int, samples: list[float]) -> None:
    for _ in range(n):
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO bench_raw (payload) VALUES (?)", (RAW_PAYLOAD,))
        conn.execute("COMMIT")
        samples.append(time.perf_counter() - t0)


def _appends(ledger: AuditLedger, n: int, samples: list[float]) -> None:
    for _ in range(n):
        t0 = time.perf_counter()
        ledger.append(EVENT)
        samples.append(time.perf_counter() - t0)


def raw_commit_floor(directory: Path, synchronous: str, n: int = SINGLE_N) -> Latency:
    """One ``BEGIN IMMEDIATE; INSERT; COMMIT`` per operation on a WAL database."""
    database = SqliteDatabase(directory / f"raw-{synchronous}.db", synchronous=synchronous)  # type: ignore[arg-type]
    conn = _raw_connection(database)
    _raw_commits(conn, n // 10, [])  # warm-up
    samples: list[float] = []
    started = time.perf_counter()
    _raw_commits(conn, n, samples)
    wall = time.perf_counter() - started
    database.close()
    return _latency(samples, wall)


def _ledger(directory: Path, synchronous: str, name: str) -> tuple[SqliteDatabase, AuditLedger]:
    database = SqliteDatabase(directory / f"{name}-{synchronous}.db", synchronous=synchronous)  # type: ignore[arg-type]
    return database, open_sqlite_ledger(database)


def single_vs_raw(
    directory: Path, synchronous: str, n: int = SINGLE_N, rounds: int = ROUNDS
) -> tuple[Latency, Latency]:
    """Raw commits and single-thread appends, interleaved in ``rounds`` chunks.

    Interleaving exposes both to the same disk conditions, so their ratio holds even on
    a machine whose fsync latency drifts (a shared CI host).
    """
    database, ledger = _ledger(directory, synchronous, "single")
    conn = _raw_connection(database)  # same file, WAL and pragmas as the ledger
    _raw_commits(conn, n // 10, [])
    _appends(ledger, n // 10, [])
    raw: list[float] = []
    appended: list[float] = []
    raw_wall = append_wall = 0.0
    chunk = max(1, n // rounds)
    for _ in range(rounds):
        started = time.perf_counter()
        _raw_commits(conn, chunk, raw)
        raw_wall += time.perf_counter() - started
        started = time.perf_counter()
        _appends(ledger, chunk, appended)
        append_wall += time.perf_counter() - started
    ledger.close()
    database.close()
    return _latency(raw, raw_wall), _latency(appended, append_wall)


@dataclass(frozen=True, slots=True)
class Concurrent:
    """Throughput of many threads appending at once, and how group commit batched them."""

    appends_per_s: float
    median_us: float
    p99_us: float
    commits: int
    mean_batch: float
    largest_batch: int
    is_chain_valid: bool


def append_concurrent(
    directory: Path, synchronous: str, threads: int = THREADS, per_thread: int = PER_THREAD
) -> Concurrent:
    """``threads`` threads each appending ``per_thread`` records as fast as they can."""
    database, ledger = _ledger(directory, synchronous, f"threads{threads}")
    ledger.append(EVENT)
    before = ledger.stats
    samples: list[list[float]] = [[] for _ in range(threads)]

    def work(slot: int) -> None:
        mine = samples[slot]
        for _ in range(per_thread):
            t0 = time.perf_counter()
            ledger.append(EVENT)
            mine.append(time.perf_counter() - t0)

    wall = timed_on_threads([functools.partial(work, slot) for slot in range(threads)])
    after = ledger.stats
    is_valid = ledger.verify().ok
    ledger.close()
    database.close()
    commits = after.commits - before.commits
    appends = after.appends - before.appends
    latency = _latency([s for chunk in samples for s in chunk], wall)
    return Concurrent(
        appends_per_s=appends / wall,
        median_us=latency.median_us,
        p99_us=latency.p99_us,
        commits=commits,
        mean_batch=appends / commits,
        largest_batch=after.largest_batch,
        is_chain_valid=is_valid,
    )


def run() -> str:
    """Measure everything and return the Markdown section."""
    rows: list[str] = []
    verdicts: list[str] = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("AIFR_BENCH_DIR")) as tmp:
        directory = Path(tmp)
        for synchronous in ("FULL", "NORMAL"):
            raw, single = single_vs_raw(directory, synchronous)
            many = append_concurrent(directory, synchronous)
            ratio = single.median_us / raw.median_us
            rows.append(
                f"| {synchronous} | raw commit (floor) | {raw.median_us:.1f} | {raw.p99_us:.1f} "
                f"| {raw.ops_per_s:,.0f} | 1.00x | |"
            )
            rows.append(
                f"| {synchronous} | `ledger.append`, 1 thread | {single.median_us:.1f} "
                f"| {single.p99_us:.1f} | {single.ops_per_s:,.0f} | {ratio:.2f}x | |"
            )
            rows.append(
                f"| {synchronous} | `ledger.append`, {THREADS} threads | {many.median_us:.1f} "
                f"| {many.p99_us:.1f} | {many.appends_per_s:,.0f} "
                f"| {many.appends_per_s / raw.ops_per_s:.2f}x raw throughput "
                f"| {many.commits:,} commits, mean batch {many.mean_batch:.1f}, "
                f"max {many.largest_batch}, chain {'valid' if many.is_chain_valid else 'BROKEN'} |"
            )
            verdicts.append(
                f"- synchronous={synchronous}: single append {ratio:.2f}x the raw commit "
                f"(target <= 1.3x: {'met' if ratio <= 1.3 else 'not met'}); "
                f"{THREADS} threads {many.appends_per_s:,.0f} durable appends/s "
                f"(target >= 5,000: {'met' if many.appends_per_s >= 5000 else 'not met'})."
            )
            print(rows[-3], rows[-2], rows[-1], sep="\n", flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    return "\n".join(
        [
            SECTION,
            "",
            f"`python -m benchmarks audit` on {machine}; WAL on the local disk, "
            f"{SINGLE_N:,} raw commits and {SINGLE_N:,} single appends interleaved in {ROUNDS} "
            f"rounds, {THREADS} threads x {PER_THREAD:,} appends. "
            "Latencies in microseconds. The raw commit is `BEGIN IMMEDIATE; INSERT; COMMIT` of "
            "a row as wide as an audit record into a bare table of the same database file "
            "(same WAL, same pragmas), the floor any durable append pays.",
            "",
            "| synchronous | what | median µs | p99 µs | ops/s | vs raw | notes |",
            "|---|---|---:|---:|---:|---:|---|",
            *rows,
            "",
            *verdicts,
            "",
            "Where the time goes: the ledger writes the same WAL bytes per commit as the raw "
            "insert (about 5 KB), so the difference is CPU work: redaction, canonical JSON, "
            "SHA-256, a 17-column row and the head read inside the transaction, about 20 µs "
            "between NORMAL commits. With FULL the same work runs right after the previous "
            "fsync, on a core that went idle, and costs 3 to 7 times more (timed per phase: "
            "building the record 32 µs after an fsync vs 4.5 µs without), which is why the "
            "FULL ratio landed between 1.2x and 1.6x across runs rather than near 1.1x. With "
            "NORMAL the commit itself is 7 µs, "
            "so 1.3x of it is out of reach for any append done in Python. Group commit lets "
            "8 threads share transactions (mean batch above), which is what lifts FULL past "
            "5,000 appends/s. This host is shared with other jobs and its fsync latency swings "
            "(0.13 to 4 ms between runs): compare the ratios within one run.",
            "",
        ]
    )


def write_section(section: str, path: Path = DOCS) -> None:
    """Replace (or add) this benchmark's section of docs/benchmarks.md, leaving others."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def main() -> None:
    """Measure, print the section, and write it to the docs unless ``--no-docs``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-docs", action="store_true", help="print, do not write the docs")
    args = parser.parse_args()
    result = run()
    if not args.no_docs:
        write_section(result)
    print(result)


if __name__ == "__main__":
    main()
