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
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script too: ``benchmarks.goals`` must import

from aifr.storage.run_rows import CLAIMABLE_INDEX  # noqa: E402
from benchmarks.cpu_meter import CpuMeter  # noqa: E402
from benchmarks.floor import floors_on_threads  # noqa: E402
from benchmarks.goals import Goal, Verdict, print_verdicts, verdict_table  # noqa: E402
from benchmarks.group_floor import grouped_floor_on_threads, weighted_floor_rows  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Scale-out (PostgreSQL)"
STEPS = 10
JOBS = 3000
"""Jobs the bare loop's timed rows drain: as many as the 300 runs of 10 steps of a worker row."""
WARM_JOBS = 50
"""Jobs each bare-loop process does untimed first, as a worker row's engines warm up."""

LONG_STEPS = 30
"""Steps of the long runs: with the 10-step rows, they split a run's own cost from a step's."""


def _workflow(name: str, steps: int) -> str:
    return f"name: {name}\nsteps:\n" + "".join(
        f"  - id: s{n}\n    capability: data.json.parse\n    inputs: {{text: '[{n}]'}}\n"
        for n in range(steps)
    )


WORKFLOW = _workflow("ten", STEPS)
LONG_WORKFLOW = _workflow("thirty", LONG_STEPS)
TEN = ("ten", STEPS)
"""The workflow a worker row drains, and its steps."""
POLICY = "version: 1\nrules:\n  - id: data\n    when: {capability: 'data.*'}\n    decision: ALLOW\n"


class Drained(NamedTuple):
    """A timed drain of a queue: how many items, how long, and the CPU it took.

    ``cpu_s`` counts the draining processes and every PostgreSQL server process
    (:class:`~benchmarks.cpu_meter.CpuMeter`).
    """

    items: int
    elapsed_s: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        return self.items / self.elapsed_s

    @property
    def cpu_us(self) -> float:
        """CPU per item, µs."""
        return self.cpu_s / self.items * 1e6

    @property
    def cores(self) -> float:
        """Cores kept busy on average while draining."""
        return self.cpu_s / self.elapsed_s


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


BARRIER_S = 300
"""Longest a drain's processes and this one wait for each other: one that died before the
start breaks the barrier (``BrokenBarrierError``) instead of hanging the run, and its
daemon processes end with it."""


def _claim_loop(dsn: str, schema: str, ready: Any, go: Any, times: Any, done: Any) -> None:
    with _connect(dsn, schema) as conn:
        for _ in range(WARM_JOBS):  # untimed: the connection's statements prepared, caches warm
            _claim_one(conn)

        def drain() -> None:
            while _claim_one(conn):
                pass

        _timed_in_child(drain, ready, go, times, done)


def _timed_in_child(
    drain: Callable[[], object], ready: Any, go: Any, times: Any, done: Any
) -> None:
    """A warm process's part of :func:`_drain_in_processes`: wait, drain, report, stay metered."""
    ready.wait(BARRIER_S)
    go.wait(BARRIER_S)
    started = time.perf_counter()
    drain()
    times.put((started, time.perf_counter()))
    done.wait(BARRIER_S)  # alive until metered: an exited process's CPU is lost to the meter


def _drain_in_processes(
    target: Callable[..., None],
    args: tuple[Any, ...],
    processes: int,
    before_go: Callable[[], None],
) -> tuple[float, float]:
    """``processes`` spawned ``target(*args, ready, go, times, done)``, timed together.

    Each warms up, then waits at the barrier; ``before_go()`` runs once all are warm (to
    queue the timed work), then they start together. Returns the span from the first
    start to the last finish, and the CPU its processes and the server spent meanwhile.
    """
    context = multiprocessing.get_context("spawn")
    ready, go, times = context.Barrier(processes + 1), context.Event(), context.Queue()
    done = context.Event()
    children = [
        context.Process(target=target, args=(*args, ready, go, times, done), daemon=True)
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    ready.wait(BARRIER_S)
    before_go()
    with CpuMeter(child.pid for child in children if child.pid is not None) as meter:
        go.set()
        spans = [times.get(timeout=BARRIER_S) for _ in children]
    done.set()
    for child in children:
        child.join()
    return max(e for _, e in spans) - min(s for s, _ in spans), meter.seconds


def _claim_one(conn: psycopg.Connection[Any]) -> bool:
    """Claim the oldest open job and complete it, in one transaction; False: none was left."""
    with conn.transaction():
        row = conn.execute(
            "SELECT id FROM jobs WHERE NOT done ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
        ).fetchone()
        if row is None:
            return False
        conn.execute("UPDATE jobs SET done = true WHERE id = %s", row)
    return True


def skip_locked_jobs(dsn: str, schema: str, processes: int) -> Drained:
    """A bare claim-and-complete loop (one transaction per job) draining :data:`JOBS` jobs.

    Each process first completes :data:`WARM_JOBS` jobs untimed; the rest are timed from
    the moment every process is warm until the last one finds the queue empty (process
    start-up is not counted), and metered for CPU over the same span.
    """
    with _connect(dsn, schema) as conn:
        conn.execute("DROP TABLE IF EXISTS jobs")
        conn.execute("CREATE TABLE jobs (id BIGSERIAL PRIMARY KEY, done BOOLEAN NOT NULL)")
        # Open jobs only, as aifr's own claim index holds only takeable runs: with the
        # primary key alone every claim walks past the index entries of all done jobs.
        conn.execute("CREATE INDEX jobs_open ON jobs (id) WHERE NOT done")
        conn.execute(
            "INSERT INTO jobs (done) SELECT false FROM generate_series(1, %s)",
            (JOBS + WARM_JOBS * processes,),
        )
    elapsed, cpu_s = _drain_in_processes(_claim_loop, (dsn, schema), processes, lambda: None)
    return Drained(JOBS, elapsed, cpu_s)


PG_FLOOR_WARM_RUNS = 20
"""Runs the CPython floor on PostgreSQL drives untimed first (statements prepared)."""


def pg_floor_steps(dsn: str, runs: int, steps: int = STEPS) -> Drained:
    """The CPython floor on PostgreSQL (``benchmarks.pg_floor``) driving ``runs`` queued runs.

    One process, one run at a time, as one ``aifr worker --concurrency 1``; warmed by
    :data:`PG_FLOOR_WARM_RUNS` runs first, and metered for CPU as the worker rows are.
    Each run has ``steps`` steps.
    """
    from benchmarks.pg_floor import LeanPgFloor

    floor = LeanPgFloor(dsn, f"aifr_bench_pgfloor_{uuid.uuid4().hex[:8]}")
    try:
        floor.queue(PG_FLOOR_WARM_RUNS, steps)
        floor.drain(steps)
        return floor_drain(floor, runs, steps)
    finally:
        floor.close()


def floor_drain(floor: Any, runs: int, steps: int = STEPS) -> Drained:
    """Queue ``runs`` runs on a :class:`~benchmarks.pg_floor.LeanPgFloor` and time their drain.

    Metered for CPU as the worker rows are (this process and the server's).
    """
    floor.queue(runs, steps)
    with CpuMeter([os.getpid()]) as meter:
        started = time.perf_counter()
        driven = floor.drain(steps)
        elapsed = time.perf_counter() - started
    return Drained(driven * steps, elapsed, meter.seconds)


def _floor_loop(dsn: str, schema: str, ready: Any, go: Any, times: Any, done: Any) -> None:
    from benchmarks.pg_floor import LeanPgFloor

    floor = LeanPgFloor(dsn, schema, create=False)
    try:
        floor.drain(STEPS)  # untimed: the warm-up runs (statements prepared, caches warm)
        _timed_in_child(lambda: floor.drain(STEPS), ready, go, times, done)
    finally:
        floor.close()


def pg_floor_processes(dsn: str, runs: int, processes: int) -> Drained:
    """The CPython floor on PostgreSQL in ``processes`` processes draining ``runs`` runs.

    One queue and one chain, as aifr's workers share: every step of every process takes
    the same chain's lock, appends its record from the head and commits, so this says how
    far any implementation that keeps one verifiable chain can scale here, where the
    bare loop (no chain) cannot. Each process starts in a process of its own, as a
    worker row's do, drains the :data:`PG_FLOOR_WARM_RUNS` runs queued per process
    untimed, then the queued ``runs`` from a common start until the last finds none.
    """
    from benchmarks.pg_floor import LeanPgFloor

    schema = f"aifr_bench_pgfloors_{uuid.uuid4().hex[:8]}"
    floor = LeanPgFloor(dsn, schema)
    try:
        floor.queue(PG_FLOOR_WARM_RUNS * processes, STEPS)
        elapsed, cpu_s = _drain_in_processes(
            _floor_loop, (dsn, schema), processes, lambda: floor.queue(runs, STEPS)
        )
    finally:
        floor.close()
    return Drained(runs * STEPS, elapsed, cpu_s)


def _warm_dbos(dsn: str) -> Any:
    """DBOS in this process on the system database ``dsn``, launched, 3 workflows run.

    A :class:`~benchmarks.workflow_bench.DbosBench` (10 ``@DBOS.step`` no-ops a workflow),
    as the workflow benchmark runs it on SQLite.
    """
    from benchmarks.workflow_bench import DbosBench

    bench = DbosBench(system_database_url=dsn, name="aifr-scaleout-bench")
    for _ in range(3):
        bench.run()
    return bench


def _dbos_loop(dsn: str, threads: int, runs: int, out: Any) -> None:
    import threading

    bench = _warm_dbos(dsn)
    try:
        each = max(1, runs // threads)

        def work() -> None:
            for _ in range(each):
                bench.run()

        pool = [threading.Thread(target=work) for _ in range(threads)]
        started = time.perf_counter()
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        out.put(each * threads * STEPS / (time.perf_counter() - started))
    finally:
        bench.close()


def _dbos_server(dsn: str, orders: Any, out: Any) -> None:
    """DBOS launched and warm in this process, running workflows one at a time on order.

    Each order is a number of workflows to run back to back (its answer: the seconds
    they took); ``None`` ends it. So a paired row (:func:`paired_with_dbos`) can time
    DBOS in slices without launching it again for each.
    """
    bench = _warm_dbos(dsn)
    try:
        out.put(0.0)  # warm: ready for orders
        while (count := orders.get()) is not None:
            started = time.perf_counter()
            for _ in range(count):
                bench.run()
            out.put(time.perf_counter() - started)
    finally:
        bench.close()


def _dbos_database(dsn: str) -> str:
    """The URL of DBOS's own database (``aifr_bench_dbos``) on the server ``dsn`` names."""
    base = dsn.split("?", 1)[0].rsplit("/", 1)[0]
    return f"{base}/aifr_bench_dbos"


class HeldDbos(NamedTuple):
    """A warm DBOS process (:func:`_dbos_server`) and the queues to order workflows from it."""

    orders: Any
    out: Any

    def drain(self, runs: int) -> Drained:
        """Run ``runs`` workflows of :data:`STEPS` steps in DBOS, one at a time; timed there."""
        self.orders.put(runs)
        return Drained(runs * STEPS, float(self.out.get(timeout=600)), 0.0)


@contextmanager
def held_dbos(dsn: str) -> Iterator[HeldDbos]:
    """DBOS on the same server as :func:`dbos_steps_per_s` runs it, launched once, warm."""
    context = multiprocessing.get_context("spawn")
    orders, out = context.Queue(), context.Queue()
    process = context.Process(target=_dbos_server, args=(_dbos_database(dsn), orders, out))
    process.start()
    try:
        out.get(timeout=600)  # launched and warm
        yield HeldDbos(orders, out)
    finally:
        orders.put(None)
        process.join(timeout=60)
        if process.is_alive():
            process.kill()


def dbos_steps_per_s(dsn: str, threads: int, runs: int) -> float:
    """Steps/s of DBOS (10 ``@DBOS.step`` no-ops per workflow) on the same server.

    DBOS keeps its system tables in a database of its own (``aifr_bench_dbos``, created
    by DBOS on first use); it runs in a fresh process so its global state is its own.
    """
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(target=_dbos_loop, args=(_dbos_database(dsn), threads, runs, out))
    process.start()
    value = float(out.get(timeout=600))
    process.join()
    return value


def pg_engines_steps_per_s(dsn: str, directory: Path, runs: int) -> dict[str, float]:
    """In one process on PostgreSQL: 1 engine, then 8 at once; steps/s and writes per commit."""
    from aifr.app import build_app

    schema = f"aifr_bench_{uuid.uuid4().hex[:10]}"
    os.environ["AIFR_DATABASE_URL"] = _schema_dsn(dsn, schema)
    app = build_app(directory)
    result: dict[str, float] = {}
    try:
        spec = app.workflow("ten")
        app.workflows.start(spec, {}, "bench")  # warm up
        for threads in (1, 8):
            engines = [app.new_engine() for _ in range(threads)]
            each = max(1, runs // threads)
            group = app.runs.group
            commits, jobs = group.commits, group.jobs

            def drive(engine: Any, each: int = each) -> None:
                for _ in range(each):
                    engine.start(spec, {}, "bench")

            pool = [threading.Thread(target=drive, args=(e,)) for e in engines]
            started = time.perf_counter()
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join()
            result[f"pg_engines_{threads}"] = (
                each * threads * STEPS / (time.perf_counter() - started)
            )
            result[f"pg_batch_{threads}"] = (group.jobs - jobs) / max(1, group.commits - commits)
    finally:
        app.close()
        os.environ.pop("AIFR_DATABASE_URL", None)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return result


def sqlite_cpu_ceiling(runs: int) -> float:
    """Steps/s one process could give at most on SQLite: 1 / user CPU per step of one run."""
    from benchmarks.workflow_bench import sqlite_cpu_ceiling as ceiling

    return ceiling(runs)


def sqlite_steps_per_s(threads: int, runs: int) -> float:
    """Steps/s of in-process aifr workflows on a SQLite file at FULL, ``threads`` at once."""
    from benchmarks.workflow_bench import AifrBench, _concurrent_steps_per_s

    directory = Path(tempfile.mkdtemp(prefix="aifr-scaleout-sqlite-"))
    bench = AifrBench(directory, "auto")
    try:
        for _ in range(3):
            bench.run()
        return _concurrent_steps_per_s(bench, threads, max(1, runs // threads))
    finally:
        bench.close()
        shutil.rmtree(directory, ignore_errors=True)


def sqlite_workers_steps_per_s(
    processes: int, concurrency: int, runs: int, *, pinned: bool = False
) -> float:
    """Steps/s of ``processes`` ``aifr worker --concurrency C`` on one SQLite file (FULL).

    Timed as the PostgreSQL rows are (runs queued while the workers are held, the clock
    from their release to the last run completed), on a fresh project whose database is
    settled first by 30 runs (a new file's WAL costs more until it is written over).
    The workers of one file queue for its write lock through the writer gate.
    """
    from aifr.app import build_app

    directory = Path(tempfile.mkdtemp(prefix="aifr-scaleout-sqlite-workers-"))
    env = {key: value for key, value in os.environ.items() if key != "AIFR_DATABASE_URL"}
    workers: list[subprocess.Popen[str]] = []
    app = None
    try:
        _project(directory)
        app = build_app(directory)
        spec = app.workflow("ten")
        for _ in range(30):
            app.workflows.start(spec, {}, "bench")
        workers = _start_workers(directory, processes, concurrency, env, banner=True, pinned=pinned)
        for worker in workers:  # its banner: the worker is polling
            assert worker.stdout is not None
            if not worker.stdout.readline():
                raise RuntimeError("a worker exited before it started polling")
        database = app.settings.sqlite_path
        assert database is not None, "the project's database is not a SQLite file"
        _hold_idle(workers, database)
        with closing(sqlite3.connect(database)) as conn:
            drained = _drain(app, workers, runs, lambda query: _scalar(conn, query))
    finally:
        _stop(workers)
        if app is not None:
            app.close()
        shutil.rmtree(directory, ignore_errors=True)
    return drained.per_s


def _start_workers(
    directory: Path,
    processes: int,
    concurrency: int,
    env: dict[str, str],
    *,
    banner: bool,
    pinned: bool = False,
) -> list[subprocess.Popen[str]]:
    """``processes`` idle ``aifr worker -c C``; ``banner``: their stdout piped (to read it).

    ``pinned``: each under ``taskset -c N``, worker i on the i-th CPU this process may use
    (see :func:`pinnable`), as docs/scaleout.md recommends for a host's workers.
    """
    aifr = str(Path(sys.executable).parent / "aifr")
    cpus = sorted(os.sched_getaffinity(0))
    command = [aifr, "worker", "--poll", "0.05", "-c", str(concurrency), "-p", str(directory)]
    return [
        subprocess.Popen(
            [*(["taskset", "-c", str(cpus[n % len(cpus)])] if pinned else []), *command],
            env=env,
            stdout=subprocess.PIPE if banner else subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for n in range(processes)
    ]


def pinnable() -> bool:
    """Whether the pinned rows can run: util-linux's ``taskset`` is installed."""
    return shutil.which("taskset") is not None


ACTIVE = "SELECT EXISTS (SELECT 1 FROM wf_runs WHERE {})".format(
    CLAIMABLE_INDEX.split(" WHERE ", 1)[1]
)
"""Whether any run is left for a worker to drive: the poll that ends a timed drain.

An index probe, so each poll reads an index page, not the table: on PostgreSQL the queue's
own partial index (``wf_runs_claimable``, whose ``WHERE`` this takes word for word), on
SQLite the state index. Polled every 10 ms while the workers run, the count of runs not
completed that this replaced scanned every run's row, pruning the pages the workers were
updating: 28 to 72 µs of the server's CPU per step drained, charged to the aifr row it
was timing (the floor's rows drain in this process and poll nothing). In 4 alternating
pairs of drains, aifr's step took 790 µs against 845 with the count (medians)."""

UNCOMPLETED = "SELECT count(*) FROM wf_runs WHERE state <> 'completed'"
"""Runs not completed, counted once a drain's clock has stopped: a row is only valid at 0."""


def _scalar(conn: Any, query: str) -> int:
    """The first column of ``query``'s one row, as an integer (``conn``: either backend)."""
    row = conn.execute(query).fetchone()
    assert row is not None  # an aggregate or EXISTS always has its row
    return int(row[0])


def _queue(app: Any, runs: int, workflow: str = TEN[0]) -> None:
    """Queue ``runs`` runs of ``workflow`` for the workers (none started here)."""
    spec = app.workflow(workflow)
    for _ in range(runs):
        app.workflows.start(spec, {}, "bench", execute=False)


def _drain(
    app: Any,
    workers: list[subprocess.Popen[str]],
    runs: int,
    count: Callable[[str], int],
    workflow: tuple[str, int] = TEN,
) -> Drained:
    """Queue ``runs`` runs while the workers are held, release them, time their draining.

    The clock stops once no run is left to drive (:data:`ACTIVE`, polled through
    ``count``); every run must then have completed, or the row is refused. The CPU is
    metered over the same span: the workers' (this process only polls) and the server's.

    Raises:
        RuntimeError: a run ended in another state (failed, compensated, ...).
    """
    _queue(app, runs, workflow[0])
    with CpuMeter(worker.pid for worker in workers) as meter:
        started = time.perf_counter()
        for worker in workers:
            worker.send_signal(signal.SIGCONT)
        while count(ACTIVE):
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
    _all_completed(count)
    return Drained(runs * workflow[1], elapsed, meter.seconds)


def _all_completed(count: Callable[[str], int]) -> None:
    left = count(UNCOMPLETED)
    if left:
        raise RuntimeError(f"{left} runs ended without completing: the row measured failures")


def _stop(workers: list[Any]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGCONT)  # a held worker would not act on SIGTERM
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(timeout=30)
        if worker.stdout is not None:
            worker.stdout.close()


def _hold_idle(workers: list[subprocess.Popen[str]], database: Path) -> None:
    """``SIGSTOP`` the workers at a moment none of them is writing ``database``.

    An idle worker still claims every poll (a write that finds nothing); one stopped
    inside it would hold the writer gate and SQLite's lock until it is resumed, and the
    runs queued meanwhile would wait for it. So the workers are stopped, the gate and the
    lock are tried once every thread of theirs is stopped, and on a miss the workers are
    resumed for a moment and stopped again.
    """
    from aifr.errors import StorageError
    from aifr.storage.sqlite.writer_gate import WriterGate

    gate = WriterGate(database, timeout_s=0)  # the workers' own gate, never waiting
    try:
        with closing(sqlite3.connect(database, timeout=0, isolation_level=None)) as probe:
            for _ in range(1000):
                for worker in workers:
                    worker.send_signal(signal.SIGSTOP)
                _wait_stopped(workers)
                try:
                    with gate:
                        probe.execute("BEGIN IMMEDIATE")
                        probe.execute("ROLLBACK")
                    return
                except (StorageError, sqlite3.OperationalError):
                    pass
                for worker in workers:
                    worker.send_signal(signal.SIGCONT)
                time.sleep(0.01)
    finally:
        gate.close()
    raise RuntimeError(f"the workers never left {database} unlocked")


def _wait_stopped(workers: list[subprocess.Popen[str]], timeout_s: float = 10.0) -> None:
    """Return once every thread of every worker is stopped (``SIGSTOP`` takes effect later).

    A probe of the lock made before then could find it free while a worker not yet
    stopped was about to take it; stopped holding it, that worker kept the runs queued
    next waiting for it until they gave up (30 s): a pinned SQLite row's first round
    failed so at 19:37 on 2026-11-28.

    Raises:
        RuntimeError: a thread was still running after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    for worker in workers:
        tasks = Path(f"/proc/{worker.pid}/task")
        while tasks.exists() and not all(_is_stopped(task / "stat") for task in tasks.iterdir()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {worker.pid} did not stop")
            time.sleep(0.001)


def _is_stopped(stat: Path) -> bool:
    """Whether the thread whose ``/proc/.../stat`` this is was stopped (or has exited)."""
    try:
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("T", "t", "Z", "X")


def _project(directory: Path) -> None:
    aifr = str(Path(sys.executable).parent / "aifr")
    subprocess.run([aifr, "init", str(directory)], check=True, capture_output=True)
    (directory / "policies" / "default.yaml").write_text(POLICY)
    (directory / "workflows" / "ten.yaml").write_text(WORKFLOW)
    (directory / "workflows" / "thirty.yaml").write_text(LONG_WORKFLOW)


class HeldWorkers(NamedTuple):
    """Warmed-up ``aifr worker`` processes, held (``SIGSTOP``), and what drains them."""

    app: Any
    workers: list[subprocess.Popen[str]]
    count: Callable[[str], int]

    def drain(self, runs: int, workflow: tuple[str, int] = TEN) -> Drained:
        """:func:`_drain` ``runs`` runs, then hold the workers again (``SIGSTOP``)."""
        drained = _drain(self.app, self.workers, runs, self.count, workflow)
        for worker in self.workers:
            worker.send_signal(signal.SIGSTOP)
        return drained


@contextmanager
def held_workers(
    dsn: str,
    directory: Path,
    processes: int,
    concurrency: int,
    *,
    pinned: bool = False,
    settings: Mapping[str, str] | None = None,
    workflow: str = TEN[0],
) -> Iterator[HeldWorkers]:
    """``processes`` idle ``aifr worker --concurrency C`` in a schema of their own, warm.

    Once every worker listens and is registered (and :data:`OVERLAP_SETTLE_S` has
    passed), they first drain :data:`WARM_RUNS_PER_ENGINE` runs per engine of
    ``workflow`` untimed (a worker that serves for hours runs warm: its pool's
    connections open, its statements prepared, its lazy imports done, as DBOS's three
    untimed workflows warm it); then they are held (``SIGSTOP``) for the block, and
    stopped and their schema dropped after it.

    ``settings``: environment overrides of the workers' project settings
    (``AIFR_<SECTION>__<KEY>``), such as :data:`INLINE_COMMITS`.
    """
    from aifr.app import build_app

    schema = f"aifr_bench_{uuid.uuid4().hex[:10]}"
    url = _schema_dsn(dsn, schema)
    env = {**os.environ, **(settings or {}), "AIFR_DATABASE_URL": url}
    os.environ["AIFR_DATABASE_URL"] = url
    app = build_app(directory)
    workers = _start_workers(directory, processes, concurrency, env, banner=False, pinned=pinned)
    try:
        with _connect(dsn, schema) as conn:
            _settle_overlap(conn, processes)

            def count(query: str) -> int:
                return _scalar(conn, query)

            _warm(app, processes * concurrency * WARM_RUNS_PER_ENGINE, count, workflow)
            for worker in workers:
                worker.send_signal(signal.SIGSTOP)
            yield HeldWorkers(app, workers, count)
    finally:
        _stop(workers)
        app.close()
        os.environ.pop("AIFR_DATABASE_URL", None)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def aifr_workers(
    dsn: str,
    directory: Path,
    processes: int,
    concurrency: int,
    runs: int,
    *,
    pinned: bool = False,
    settings: Mapping[str, str] | None = None,
    workflow: tuple[str, int] = TEN,
) -> Drained:
    """``processes`` idle ``aifr worker --concurrency C`` draining ``runs`` runs (of steps).

    The runs are queued beforehand, as the floor's jobs are: the workers, warm
    (:func:`held_workers`), are held (``SIGSTOP``) while this process queues the runs,
    released together (``SIGCONT``) and the clock runs until the last run completed. So
    a row counts the workers' draining only, not this process's queueing, whose CPU
    would otherwise compete with the workers for the same cores (more so with more
    workers). The notifications of the queued runs wait in the workers' sockets
    meanwhile. ``workflow``: the name of the workflow the runs are of (warm-up runs
    included), and its steps.
    """
    with held_workers(
        dsn,
        directory,
        processes,
        concurrency,
        pinned=pinned,
        settings=settings,
        workflow=workflow[0],
    ) as held:
        return held.drain(runs, workflow)


PAIRED_SLICES = 6
"""Slices of the paired row (:func:`paired_with_floor`): each side drains its share of the
runs in this many turns, the two sides alternating."""


def paired_with_floor(dsn: str, directory: Path, runs: int) -> tuple[Drained, Drained]:
    """One ``aifr worker -c 1`` and the CPython floor, in alternating slices: (aifr, floor).

    Each drains ``runs`` runs of :data:`STEPS` steps in :data:`PAIRED_SLICES` slices,
    the two taking turns (the floor first in even slices, the worker first in odd
    ones), so both are timed under the same load of this shared host. Their own rows
    (``pg_floor`` and ``aifr_1x1``) are drained about half a minute apart in a round;
    on a host whose neighbours' load comes and goes within that, a round's ratio of
    the two moved from 0.63x to 2.13x for the same code (2026-11-29, 04:46), while
    slices taken in turns gave 1.28x to 1.45x within the hour. Each side is warm before
    its first slice, as in its own row; the sums of the slices' times and CPU make the
    two rows.
    """
    from benchmarks.pg_floor import LeanPgFloor

    floor = LeanPgFloor(dsn, f"aifr_bench_pgfloor_{uuid.uuid4().hex[:8]}")
    try:
        floor.queue(PG_FLOOR_WARM_RUNS, STEPS)
        floor.drain(STEPS)
        with held_workers(dsn, directory, 1, 1) as held:
            return _in_turns(held.drain, runs, lambda size: floor_drain(floor, size), runs)
    finally:
        floor.close()


def paired_with_dbos(
    dsn: str, directory: Path, runs: int, dbos_runs: int
) -> tuple[Drained, Drained]:
    """One ``aifr worker -c 1`` and DBOS, one workflow at a time, in slices taken in turns.

    As :func:`paired_with_floor`, with DBOS (:func:`held_dbos`, launched once and warm)
    in the floor's place: (aifr, DBOS). aifr drains ``runs`` runs and DBOS runs
    ``dbos_runs`` workflows (its steps cost several times aifr's, so fewer make as
    long a slice), each in :data:`PAIRED_SLICES` slices. The rows ``aifr_1x1`` and
    ``dbos_1`` run about a minute apart in a round, where the shared host's load moved
    their ratio from 5.16x to 7.98x between rounds of one run (07:43 on 2026-11-29).
    """
    with held_dbos(dsn) as dbos, held_workers(dsn, directory, 1, 1) as held:
        return _in_turns(held.drain, runs, dbos.drain, dbos_runs)


def _in_turns(
    ours: Callable[[int], Drained],
    runs: int,
    theirs: Callable[[int], Drained],
    their_runs: int,
) -> tuple[Drained, Drained]:
    """``ours`` and ``theirs`` drained in :data:`PAIRED_SLICES` slices each, taking turns.

    ``theirs`` goes first in even slices and ``ours`` in odd ones; each side's slices
    are summed into its row: (ours, theirs).
    """
    mine = _slices(runs)
    other = _slices(their_runs)
    slices: list[tuple[Drained, Drained]] = []
    for n, (size, their_size) in enumerate(zip(mine, other, strict=True)):
        if n % 2:
            drained = ours(size)
            slices.append((drained, theirs(their_size)))
        else:
            their_drained = theirs(their_size)
            slices.append((ours(size), their_drained))
    return _summed(a for a, _ in slices), _summed(b for _, b in slices)


def _slices(runs: int) -> list[int]:
    """``runs`` split into :data:`PAIRED_SLICES` slices, the first ones one larger."""
    share, extra = divmod(runs, PAIRED_SLICES)
    return [share + (1 if n < extra else 0) for n in range(PAIRED_SLICES)]


PAIRED = "1 worker, --concurrency 1, over the floor, in slices taken in turns"
"""What the per-step verdict read on the paired rows (:func:`paired_with_floor`) measured."""
PAIRED_DBOS = "1 run at a time each, in slices taken in turns"
"""What the DBOS verdict read on its paired rows (:func:`paired_with_dbos`) measured."""


def _summed(drains: Iterable[Drained]) -> Drained:
    """Several drains as one: their items, times and CPU added up."""
    items = elapsed = cpu = 0.0
    for drained in drains:
        items += drained.items
        elapsed += drained.elapsed_s
        cpu += drained.cpu_s
    return Drained(int(items), elapsed, cpu)


OVERLAP_SETTLE_S = 1.2
"""How long a worker row waits, once every worker is registered, before its warm-up.

``workflows.overlap_commits = "auto"`` counts this host's workers at most once a second
(``CommitOverlap``): a worker that polled before the others announced themselves keeps
that count for up to a second, and would drive the first second of a short drain as if
alone. A worker that serves for hours decides on the registry it sees, as here."""


def _settle_overlap(conn: psycopg.Connection[Any], processes: int) -> None:
    """Wait until ``processes`` workers are registered, then out one "auto" decision's age.

    It reads the workers' own schema: a count of ``LISTEN`` sessions, the wait this
    replaced, read the whole server's and was met by other tests' workers while these
    were still migrating their schema (a CI run on 2026-11-29 then found no
    ``wf_workers`` table). Until the first worker has migrated the schema, the table
    is not there: none is registered. A worker starts listening for wake-ups (its own
    thread) before it registers; one that has not yet polls (every 0.05 s here), and
    the untimed warm-up comes before any timed drain.
    """
    deadline = time.monotonic() + 180
    while True:
        try:
            row = conn.execute("SELECT count(*) FROM wf_workers").fetchone()
        except psycopg.errors.UndefinedTable:
            row = None
        if row is not None and row[0] >= processes:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not register")
        time.sleep(0.05)
    time.sleep(OVERLAP_SETTLE_S)


INLINE_COMMITS = {"AIFR_WORKFLOWS__OVERLAP_COMMITS": "false"}
"""Workers whose steps each wait for their commit before anything else (the setting off).

The rows ``inline_1x1`` and ``inline_2x1`` drain as ``aifr_1x1`` and ``aifr_2x1`` do with
it: on this host the server shares the cores with the workers, where the overlap of a
step's commit with the next step's checks helps one worker and costs two (see
docs/scaleout.md, "A step's commit confirmed before the next step acts"). The ``aifr_``
rows keep the default, ``"auto"``, which chooses per host (here: on for one worker, off
for two or more; "Overlapping only where a core is free")."""

WARM_RUNS_PER_ENGINE = 2
"""Runs each engine of a PostgreSQL worker row drives untimed before the timed queue."""

PG_WORKER_RUNS = 300
"""Fewest runs a PostgreSQL worker row drains: 64 took 2 workers about half a second, short
enough for one slow wake-up or one burst of the shared host's load to move a row."""


def _warm(app: Any, runs: int, count: Callable[[str], int], workflow: str = TEN[0]) -> None:
    """Queue ``runs`` runs of ``workflow`` for the running workers; wait until all are done."""
    _queue(app, runs, workflow)
    deadline = time.monotonic() + 300
    while count(ACTIVE):
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not drain their warm-up runs")
        time.sleep(0.01)
    _all_completed(count)


WORKER_ROWS = ((1, 1), (2, 1), (4, 1), (1, 8), (2, 8), (4, 4))
"""(worker processes, --concurrency) of the aifr rows."""

SQLITE_WORKER_ROWS = ((1, 1), (1, 8), (2, 4), (2, 8))
"""(worker processes, --concurrency) of the rows of workers on one SQLite file."""
PINNED_WORKER_ROWS = ((1, 1), (2, 1), (1, 8), (2, 8))
"""The PostgreSQL rows again with each worker pinned to a CPU of its own (``taskset``)."""
PINNED_SQLITE_WORKER_ROWS = ((1, 1), (1, 8), (2, 4), (2, 8))
"""The SQLite worker rows again, pinned likewise."""
SQLITE_WORKER_RUNS = 300
"""Fewest runs a SQLite worker row drains (64 runs took them about 0.3 s)."""
SQLITE_THREAD_RUNS = 240
"""Fewest runs of the in-process SQLite rows (aifr's threads, its CPU ceiling, the floors).

With 64, aifr's ceiling was read from about 0.16 s of user CPU, 16 of the kernel's 10 ms
ticks, and its 8 threads ran for a quarter of a second: in the run of 07:43 on 2026-11-29
the ceiling moved from 3,643 to 5,074 steps/s between two rounds, and the weighted floor,
made as heavy as that ceiling said, measured 311 µs a step for a goal of 274 in one round
and 137 for 197 in the next. 240 (30 a thread at 8) gives the ceiling about 0.6 s of CPU,
as the weighted floor's own calibration takes a quarter of a second or more."""


def _record(rows: dict[str, float], key: str, drained: Drained) -> None:
    """A drain's rate as ``key``, its CPU per item and cores busy as ``cpu_``/``cores_`` keys."""
    rows[key] = drained.per_s
    rows[f"cpu_{key}"] = drained.cpu_us
    rows[f"cores_{key}"] = drained.cores


class Measured(NamedTuple):
    """One run of the benchmark: each row's median over its rounds, and every round's rows."""

    medians: dict[str, float]
    rounds: list[dict[str, float]]


def measure(dsn: str, runs: int, rounds: int) -> Measured:
    """Alternating rounds of every row; the median of each, and each round's own rows."""
    floor_schema = f"aifr_bench_floor_{uuid.uuid4().hex[:8]}"
    directory = Path(tempfile.mkdtemp(prefix="aifr-scaleout-"))
    samples: dict[str, list[float]] = {}
    each_round: list[dict[str, float]] = []
    load_before = os.getloadavg()[0]
    try:
        _project(directory)
        for _ in range(rounds):
            rows = {"commit_ms": commit_floor_ms(dsn, floor_schema)}
            _record(rows, "pg_floor", pg_floor_steps(dsn, max(runs, PG_WORKER_RUNS)))
            for processes in (1, 2):
                _record(
                    rows,
                    f"pg_floors_{processes}",
                    pg_floor_processes(dsn, max(runs, PG_WORKER_RUNS), processes),
                )
            for processes in (1, 2):
                _record(
                    rows, f"skip_locked_{processes}", skip_locked_jobs(dsn, floor_schema, processes)
                )
            for processes, concurrency in WORKER_ROWS:
                _record(
                    rows,
                    f"aifr_{processes}x{concurrency}",
                    aifr_workers(dsn, directory, processes, concurrency, max(runs, PG_WORKER_RUNS)),
                )
            paired = paired_with_floor(dsn, directory, max(runs, PG_WORKER_RUNS))
            _record(rows, "paired_aifr_1x1", paired[0])
            _record(rows, "paired_pg_floor", paired[1])
            with_dbos = paired_with_dbos(dsn, directory, max(runs, PG_WORKER_RUNS), runs)
            _record(rows, "paired_dbos_aifr_1x1", with_dbos[0])
            rows["paired_dbos_1"] = with_dbos[1].per_s
            long_runs = max(runs, PG_WORKER_RUNS) * STEPS // LONG_STEPS  # as many steps
            _record(rows, "pg_floor_long", pg_floor_steps(dsn, long_runs, LONG_STEPS))
            _record(
                rows,
                "aifr_long_1x1",
                aifr_workers(dsn, directory, 1, 1, long_runs, workflow=("thirty", LONG_STEPS)),
            )
            for processes in (1, 2):
                _record(
                    rows,
                    f"inline_{processes}x1",
                    aifr_workers(
                        dsn,
                        directory,
                        processes,
                        1,
                        max(runs, PG_WORKER_RUNS),
                        settings=INLINE_COMMITS,
                    ),
                )
            rows.update(pg_engines_steps_per_s(dsn, directory, runs))
            in_process = max(runs, SQLITE_THREAD_RUNS)
            for threads in (1, 8):
                rows[f"dbos_{threads}"] = dbos_steps_per_s(dsn, threads, runs)
                rows[f"sqlite_{threads}"] = sqlite_steps_per_s(threads, in_process)
            rows["sqlite_ceiling"] = sqlite_cpu_ceiling(in_process)  # see workflow_bench
            rows["floor_threads_1"] = floors_on_threads(1, in_process, STEPS, "FULL")
            rows["floor_threads_8"] = floors_on_threads(8, in_process // 8, STEPS, "FULL")
            rows["grouped_floor_1"] = grouped_floor_on_threads(1, in_process, STEPS, "FULL")
            rows["grouped_floor_8"] = grouped_floor_on_threads(8, in_process // 8, STEPS, "FULL")
            weighted = weighted_floor_rows(1e6 / rows["sqlite_ceiling"], in_process, STEPS)
            rows["weighted_floor_cpu"] = weighted.cpu_us
            rows["weighted_floor_ceiling"] = weighted.ceiling
            rows["weighted_floor_1"] = weighted.one
            rows["weighted_floor_8"] = weighted.eight
            for processes, concurrency in SQLITE_WORKER_ROWS:
                rows[f"sqlite_workers_{processes}x{concurrency}"] = sqlite_workers_steps_per_s(
                    processes, concurrency, max(runs, SQLITE_WORKER_RUNS)
                )
            if pinnable():
                for processes, concurrency in PINNED_WORKER_ROWS:
                    _record(
                        rows,
                        f"pinned_{processes}x{concurrency}",
                        aifr_workers(
                            dsn,
                            directory,
                            processes,
                            concurrency,
                            max(runs, PG_WORKER_RUNS),
                            pinned=True,
                        ),
                    )
                for processes, concurrency in PINNED_SQLITE_WORKER_ROWS:
                    rows[f"pinned_sqlite_{processes}x{concurrency}"] = sqlite_workers_steps_per_s(
                        processes, concurrency, max(runs, SQLITE_WORKER_RUNS), pinned=True
                    )
            for key, value in rows.items():
                samples.setdefault(key, []).append(value)
                print(f"  {key}: {value:,.2f}", flush=True)
            each_round.append(rows)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(floor_schema))
            )
    medians = {key: statistics.median(values) for key, values in samples.items()}
    host = {
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "cpus": len(os.sched_getaffinity(0)),
    }
    return Measured({**medians, **host}, [{**rows, **host} for rows in each_round])


STEP_COST = Goal("aifr per step / one PostgreSQL commit (issue 24)", 1.5)
VS_DBOS = Goal("DBOS per step / aifr per step (issue 24)", 6.0, at_least=True)
TWO_WORKERS = Goal("2 worker processes / 1, steps/s (issue 24)", 1.7, at_least=True)
PG_EIGHT = Goal("PostgreSQL, 8 concurrent runs / 1, steps/s (as on SQLite)", 3.0, True)
SQLITE_EIGHT = Goal("SQLite, 8 concurrent runs / 1, steps/s (issue 24)", 3.0, at_least=True)
SQLITE_CEILING = Goal("restated: SQLite 8 runs at once / (1 / user CPU per step)", 0.85, True)
SQLITE_VS_FLOOR_THREADS = Goal(
    "restated: SQLite 8 runs / 1, over the CPython floor's 8 threads / 1 (FULL)", 0.85, True
)
"""Issue 24's 3x for 8 runs at once on SQLite, against the floor on 8 threads
(``floors_on_threads``: the leanest step, each thread on its own file, so no lock between
them) over the floor on one, both at FULL, on settled files, measured in the same run.
Kept for continuity; :data:`SQLITE_VS_GROUPED_FLOOR` is the floor that bounds the goal."""
SQLITE_VS_GROUPED_FLOOR = Goal(
    "restated: SQLite 8 runs / 1, over the grouped CPython floor's 8 threads / 1 (FULL)",
    0.85,
    True,
)
"""Issue 24's 3x for 8 runs at once on SQLite, against what threads allow any CPython
implementation that keeps aifr's design: the grouped floor (``grouped_floor_on_threads``:
the leanest step, every run on one settled file with one audit chain, steps of different
runs group-committed) on 8 threads over the same on one, at FULL, in the same run. Where
that is below 3x, the goal is below the floor and aifr's 8/1 is held to 0.85 of the
floor's (the issue's own 0.85 of 2x for workers)."""
SQLITE_VS_WEIGHTED_FLOOR = Goal(
    "restated: SQLite 8 runs / 1, over the weighted grouped floor's 8 threads / 1 (FULL)",
    0.85,
    True,
)
"""The grouped floor's 8/1 is that of the leanest step, mostly its commit's wait; aifr's
step is mostly CPU, and threads of one interpreter take turns at CPU. The weighted
grouped floor (``weighted_floor_rows``) is the same floor with each step made as heavy,
in user CPU at OFF, as aifr's step measured in the same round, by interpreter work and
nothing else: its 8/1 is what threads give a step of aifr's weight with no machinery of
aifr's. Held to 0.85 of it, this goal asks aifr's batching, locking and hand-offs to be
as good as the least there is; the step's weight is the per-step goals' to judge."""
SQLITE_CEILING_VS_WEIGHTED = Goal(
    "restated: SQLite 8 runs / the GIL's ceiling, over the weighted floor's (FULL)", 0.85, True
)
""":data:`SQLITE_CEILING` against the same share for the weighted grouped floor (its 8
threads at FULL over 1 / its own user CPU per step at OFF), measured in the same round:
where that floor, with no machinery of aifr's, reaches less than 0.85 of its ceiling,
the ceiling goal is below the floor, and aifr's share is held to 0.85 of the floor's."""
TWO_VS_FLOOR = Goal("restated: aifr's 2/1 over the bare loop's 2/1", 0.85, at_least=True)
STEP_VS_LOOP = Goal("restated: aifr per step / one bare SKIP LOCKED job", 1.5)
STEP_VS_FLOOR = Goal("restated: aifr per step / its CPython floor on PostgreSQL", 1.5)
"""Issue 21's goal for a durable step (1.5x its CPython floor), on PostgreSQL: the floor
(``benchmarks/pg_floor.py``) is a queued, leased, governed step with its chained record,
one statement and one commit each, and the Python of ``benchmarks/floor.py``."""
FLOOR_TWO = Goal("bare SKIP LOCKED loop, 2 processes / 1 (the floor's own scaling)", 1.7, True)
PG_FLOOR_TWO = Goal("CPython floor on PostgreSQL, 2 processes / 1 (one chain)", 1.7, True)
TWO_VS_PG_FLOOR = Goal("restated: aifr's 2/1 over the CPython floor's 2/1 (one chain)", 0.85, True)
"""Issue 24's 1.7x for a second worker, against what a second process of the CPython floor
on PostgreSQL (``pg_floor_processes``) gives in the same run: both keep one chain, whose
lock every step takes and holds to its commit. Where the floor's own 2/1 is below 1.7x,
the goal is below the floor, and aifr's 2/1 is held to 0.85 of the floor's."""
TWO_VS_CEILING = Goal("restated: 2 worker processes / 1 over the host's ceiling for it", 0.85, True)
"""The issue's 1.7x is 0.85 of a doubling. Where one worker (with its share of the server)
already keeps more than cores / 2 busy, two cannot double it on this host, whatever they
do: the ceiling is ``min(2, cores / cores one worker kept busy)``, both measured in the
same run (:func:`two_worker_ceiling`), and the goal 0.85 of it."""


class RunSplit(NamedTuple):
    """A run's time split into its own part and its steps', from 10- and 30-step runs."""

    step_us: float
    """What one more step adds to a run: the cost of a step in a long run."""
    run_us: float
    """What a run costs besides its steps: its claim, and aifr's start and end records."""


def run_split(result: dict[str, float], ten: str, thirty: str) -> RunSplit:
    """Split rows ``ten`` and ``thirty`` (steps/s of 10- and 30-step runs) into run and step.

    A run of ``n`` steps takes ``run + n * step``; the two rows give the two unknowns.
    """
    per_run_ten = STEPS / result[ten]
    per_run_thirty = LONG_STEPS / result[thirty]
    step = (per_run_thirty - per_run_ten) / (LONG_STEPS - STEPS)
    return RunSplit(step * 1e6, (per_run_ten - STEPS * step) * 1e6)


def _split_lines(result: dict[str, float]) -> list[str]:
    """The paragraph that splits a worker's runs, and the floor's, into run and steps."""
    if "aifr_long_1x1" not in result:  # a run from before the long rows
        return []
    aifr = run_split(result, "aifr_1x1", "aifr_long_1x1")
    floor = run_split(result, "pg_floor", "pg_floor_long")
    return [
        f"**A run and its steps** (the {LONG_STEPS}-step rows against the {STEPS}-step ones, "
        "1 worker at `-c 1` and the CPython floor): one more step cost aifr "
        f"{aifr.step_us:,.0f} µs and the floor {floor.step_us:,.0f} µs "
        f"({aifr.step_us / floor.step_us:.2f}x); a run's own part (its claim, and for aifr "
        f"its `workflow.started` and end records) cost aifr "
        f"{aifr.run_us:,.0f} µs and the floor {floor.run_us:,.0f} µs. Per step over the "
        f"floor, {LONG_STEPS}-step runs: "
        f"{result['pg_floor_long'] / result['aifr_long_1x1']:.2f}x ({STEPS}-step runs: "
        f"{result['pg_floor'] / result['aifr_1x1']:.2f}x, the row issue 24's goal is read "
        "on). A difference of two drains, so noisier than either row.",
        "",
    ]


def two_worker_ceiling(result: dict[str, float], one: str) -> float:
    """The most 2 workers can give over 1 (row ``one``) on this host's cores: at most 2x."""
    return min(2.0, result["cpus"] / result[f"cores_{one}"])


def _over_ceiling(result: dict[str, float], prefix: str, concurrency: int) -> float:
    """2 workers / 1 at ``concurrency`` (rows ``prefix``), over :func:`two_worker_ceiling`."""
    one = f"{prefix}1x{concurrency}"
    return result[f"{prefix}2x{concurrency}"] / result[one] / two_worker_ceiling(result, one)


def _paired(
    result: dict[str, float], what: str, over: str, under: str, goal: Goal
) -> list[Verdict]:
    """The verdict ``over / under`` of two rows drained in turns, or none in a run without them.

    A run from before a pairing was measured has neither row.
    """
    if over not in result or under not in result:
        return []
    return [Verdict(what, result[over] / result[under], goal)]


def verdicts(result: dict[str, float]) -> list[Verdict]:
    """Each goal of issue 24 against this run's numbers (ratios within the run)."""
    commit_s = result["commit_ms"] / 1000
    return [
        Verdict("1 process, --concurrency 1", 1 / result["aifr_1x1"] / commit_s, STEP_COST),
        Verdict("1 process, --concurrency 8", 1 / result["aifr_1x8"] / commit_s, STEP_COST),
        Verdict("1 run at a time each", result["aifr_1x1"] / result["dbos_1"], VS_DBOS),
        Verdict(
            "the CPython floor itself, one run at a time",
            1 / result["pg_floor"] / commit_s,
            STEP_COST,
        ),
        Verdict(
            "the CPython floor itself, one run at a time",
            result["pg_floor"] / result["dbos_1"],
            VS_DBOS,
        ),
        Verdict(
            "1 worker, --concurrency 1, over the floor",
            result["pg_floor"] / result["aifr_1x1"],
            STEP_VS_FLOOR,
        ),
        *_paired(result, PAIRED, "paired_pg_floor", "paired_aifr_1x1", STEP_VS_FLOOR),
        *_paired(result, PAIRED_DBOS, "paired_dbos_aifr_1x1", "paired_dbos_1", VS_DBOS),
        Verdict(
            "one process, 8 engines vs 1",
            result["pg_engines_8"] / result["pg_engines_1"],
            PG_EIGHT,
        ),
        Verdict("8 runs at once each", result["aifr_1x8"] / result["dbos_8"], VS_DBOS),
        Verdict("--concurrency 1", result["aifr_2x1"] / result["aifr_1x1"], TWO_WORKERS),
        Verdict(
            "--concurrency 1, workflows.overlap_commits = false",
            result["inline_2x1"] / result["inline_1x1"],
            TWO_WORKERS,
        ),
        Verdict(
            "1 worker, --concurrency 1, overlap_commits = false, over the floor",
            result["pg_floor"] / result["inline_1x1"],
            STEP_VS_FLOOR,
        ),
        Verdict("--concurrency 8", result["aifr_2x8"] / result["aifr_1x8"], TWO_WORKERS),
        Verdict("same run", result["skip_locked_2"] / result["skip_locked_1"], FLOOR_TWO),
        Verdict("same run", result["pg_floors_2"] / result["pg_floors_1"], PG_FLOOR_TWO),
        Verdict(
            "--concurrency 1, over the CPython floor's 2/1",
            (result["aifr_2x1"] / result["aifr_1x1"])
            / (result["pg_floors_2"] / result["pg_floors_1"]),
            TWO_VS_PG_FLOOR,
        ),
        *(
            Verdict(
                f"--concurrency {c}, over the floor's 2/1",
                (result[f"aifr_2x{c}"] / result[f"aifr_1x{c}"])
                / (result["skip_locked_2"] / result["skip_locked_1"]),
                TWO_VS_FLOOR,
            )
            for c in (1, 8)
        ),
        *(
            Verdict(
                f"--concurrency {c}, over min(2, cores / cores 1 kept busy)",
                _over_ceiling(result, "aifr_", c),
                TWO_VS_CEILING,
            )
            for c in (1, 8)
        ),
        *(
            Verdict(
                f"--concurrency {c}, per step / one bare-loop job",
                result["skip_locked_1"] / result[f"aifr_1x{c}"],
                STEP_VS_LOOP,
            )
            for c in (1, 8)
        ),
        Verdict("FULL, 8 threads vs 1", result["sqlite_8"] / result["sqlite_1"], SQLITE_EIGHT),
        Verdict(
            "FULL, 8 threads vs the GIL's ceiling",
            result["sqlite_8"] / result["sqlite_ceiling"],
            SQLITE_CEILING,
        ),
        Verdict(
            "FULL, 8 threads vs 1, over the floor's 8 threads / 1",
            result["sqlite_8"]
            / result["sqlite_1"]
            / (result["floor_threads_8"] / result["floor_threads_1"]),
            SQLITE_VS_FLOOR_THREADS,
        ),
        Verdict(
            "FULL, 8 threads vs 1, over the grouped floor's 8 threads / 1",
            result["sqlite_8"]
            / result["sqlite_1"]
            / (result["grouped_floor_8"] / result["grouped_floor_1"]),
            SQLITE_VS_GROUPED_FLOOR,
        ),
        *_weighted_verdicts(result),
        Verdict(
            "FULL, 2 worker processes x 4 vs 1 worker x 1",
            result["sqlite_workers_2x4"] / result["sqlite_workers_1x1"],
            SQLITE_EIGHT,
        ),
        *_pinned_verdicts(result),
    ]


def round_by_round(measured: Measured) -> list[tuple[Verdict, list[float]]]:
    """Each goal's verdict on the run's medians, with its ratio in every round.

    A round's ratio is read from that round's rows alone. A verdict on medians is a ratio
    of medians of rows measured minutes apart, on a host whose speed drifts; the rounds
    show how far from it a single round, or the next run, may land.

    Raises:
        ValueError: a round's goals differ from the medians' (its rows differ).
    """
    overall = verdicts(measured.medians)
    per_round = [verdicts(rows) for rows in measured.rounds]
    for round_verdicts in per_round:
        if [(v.goal, v.what) for v in round_verdicts] != [(v.goal, v.what) for v in overall]:
            raise ValueError("a round measured other rows than the run's medians hold")
    return [
        (verdict, [round_verdicts[n].ratio for round_verdicts in per_round])
        for n, verdict in enumerate(overall)
    ]


def _rounds_text(ratios: list[float]) -> str:
    return ", ".join(f"{ratio:.2f}" for ratio in ratios)


def round_table(spread: list[tuple[Verdict, list[float]]]) -> list[str]:
    """Markdown lines: each goal's ratio on the medians, in each round, and the rounds met."""
    lines = [
        "| goal | measured | medians | each round | rounds met |",
        "|---|---|---:|---|---:|",
    ]
    for verdict, ratios in spread:
        met = sum(1 for ratio in ratios if verdict.goal.met(ratio))
        lines.append(
            f"| {verdict.goal.text} | {verdict.what} | {verdict.ratio:.2f}x | "
            f"{_rounds_text(ratios)} | "
            f"{met} of {len(ratios)} |"
        )
    return lines


def _weighted_verdicts(result: dict[str, float]) -> list[Verdict]:
    """The SQLite goals against the weighted grouped floor (runs from before it had none)."""
    if "weighted_floor_8" not in result:
        return []
    return [
        Verdict(
            "FULL, 8 threads vs 1, over the weighted floor's 8 threads / 1",
            result["sqlite_8"]
            / result["sqlite_1"]
            / (result["weighted_floor_8"] / result["weighted_floor_1"]),
            SQLITE_VS_WEIGHTED_FLOOR,
        ),
        Verdict(
            "FULL, 8 threads vs the GIL's ceiling, over the weighted floor's",
            result["sqlite_8"]
            / result["sqlite_ceiling"]
            / (result["weighted_floor_8"] / result["weighted_floor_ceiling"]),
            SQLITE_CEILING_VS_WEIGHTED,
        ),
    ]


def _weighted_rows(result: dict[str, float]) -> list[str]:
    """The weighted grouped floor's rows of the table (none for runs from before it)."""
    if "weighted_floor_8" not in result:
        return []
    cpu = f"{result['weighted_floor_cpu']:.0f} µs CPU (aifr: {1e6 / result['sqlite_ceiling']:.0f})"
    return [
        f"| the same, each step weighted to aifr's CPU: its ceiling (1 / user CPU per step, "
        f"OFF) | {result['weighted_floor_ceiling']:,.0f} steps/s | {cpu} | |",
        f"| the same, weighted, 1 thread (FULL) | {result['weighted_floor_1']:,.0f} steps/s | | "
        f"{result['weighted_floor_1'] / result['weighted_floor_ceiling']:.2f}x of its ceiling |",
        f"| the same, weighted, 8 threads (FULL) | {result['weighted_floor_8']:,.0f} steps/s | | "
        f"{result['weighted_floor_8'] / result['weighted_floor_1']:.2f}x "
        f"({result['weighted_floor_8'] / result['weighted_floor_ceiling']:.2f}x of its ceiling) |",
    ]


def _pinned_verdicts(result: dict[str, float]) -> list[Verdict]:
    """The goals again with every worker pinned to a CPU of its own (when taskset ran)."""
    if "pinned_1x1" not in result:
        return []
    return [
        *(
            Verdict(
                f"--concurrency {c}, each worker pinned to a CPU",
                result[f"pinned_2x{c}"] / result[f"pinned_1x{c}"],
                TWO_WORKERS,
            )
            for c in (1, 8)
        ),
        *(
            Verdict(
                f"--concurrency {c}, pinned, over min(2, cores / cores 1 kept busy)",
                _over_ceiling(result, "pinned_", c),
                TWO_VS_CEILING,
            )
            for c in (1, 8)
        ),
        *(
            Verdict(
                f"FULL, {label}, pinned, vs 1 pinned worker x 1",
                result[f"pinned_sqlite_{key}"] / result["pinned_sqlite_1x1"],
                SQLITE_EIGHT,
            )
            for key, label in (("1x8", "1 worker x 8"), ("2x4", "2 worker processes x 4"))
        ),
    ]


def _sqlite_worker_row(
    result: dict[str, float], processes: int, concurrency: int, *, pinned: bool = False
) -> str:
    """A SQLite worker row of the table, its ratio over 1 worker at ``-c 1`` (pinned alike)."""
    prefix = "pinned_sqlite_" if pinned else "sqlite_workers_"
    rate = result[f"{prefix}{processes}x{concurrency}"]
    plural = "es" if processes > 1 else ""
    name = (
        f"aifr on SQLite (FULL), {processes} worker process{plural}, `--concurrency {concurrency}`"
        + (", each pinned to a CPU" if pinned else "")
    )
    if (processes, concurrency) == (1, 1):
        return f"| {name} | {rate:,.0f} steps/s | | |"
    ratio = rate / result[f"{prefix}1x1"]
    return f"| {name} (vs 1 worker, `-c 1`) | {rate:,.0f} steps/s | | {ratio:.2f}x |"


def _pinned_rows(result: dict[str, float], steps: Callable[[str, str | None], str]) -> list[str]:
    """The rows of workers pinned to CPUs (none when ``taskset`` was missing)."""
    if "pinned_1x1" not in result:
        return ["| workers pinned to CPUs | not measured: `taskset` is not installed | | |"]
    rows = [
        f"| aifr, {p} worker process{'es' if p > 1 else ''}, `--concurrency {c}`, each pinned"
        f" to a CPU | {steps(f'pinned_{p}x{c}', f'pinned_1x{c}' if p > 1 else None)} |"
        for p, c in PINNED_WORKER_ROWS
    ]
    return rows + [
        _sqlite_worker_row(result, p, c, pinned=True) for p, c in PINNED_SQLITE_WORKER_ROWS
    ]


def _cpu_table(result: dict[str, float]) -> list[str]:
    """CPU of each timed drain (its processes and the server) and the ceiling it sets."""
    lines = [
        f"CPU over each timed drain, the draining processes' and every PostgreSQL server "
        f"process's ({result['cpus']:.0f} cores; medians of the rounds). A second worker "
        "can add at most what the cores one leaves idle allow: `min(2, cores / cores busy)`.",
        "",
        "| drain | CPU per step or job | cores busy | ceiling for 2 of these / 1 |",
        "|---|---:|---:|---:|",
    ]
    drains = [("pg_floor", "CPython floor on PostgreSQL, 1 process", 1)]
    drains += [
        (
            f"pg_floors_{n}",
            f"CPython floor on PostgreSQL, {'2 processes of their own' if n > 1 else '1 process of its own'}",
            n,
        )
        for n in (1, 2)
    ]
    drains += [("pg_floor_long", f"CPython floor on PostgreSQL, {LONG_STEPS}-step runs", 1)]
    drains += [(f"skip_locked_{n}", f"bare SKIP LOCKED loop, {n} process", n) for n in (1, 2)]
    drains += [
        (f"aifr_{p}x{c}", f"aifr, {p} worker{'s' if p > 1 else ''}, `-c {c}`", p)
        for p, c in WORKER_ROWS
    ]
    drains += [("aifr_long_1x1", f"aifr, 1 worker, `-c 1`, {LONG_STEPS}-step runs", 1)]
    drains += [
        ("paired_pg_floor", "CPython floor on PostgreSQL, 1 process, in turns with aifr", 1),
        ("paired_aifr_1x1", "aifr, 1 worker, `-c 1`, in turns with the floor", 1),
        ("paired_dbos_aifr_1x1", "aifr, 1 worker, `-c 1`, in turns with DBOS", 1),
    ]
    drains += [
        (f"inline_{p}x1", f"aifr, {p} worker{'s' if p > 1 else ''}, `-c 1`, overlap off", p)
        for p in (1, 2)
    ]
    drains += [
        (f"pinned_{p}x{c}", f"aifr, {p} worker{'s' if p > 1 else ''}, `-c {c}`, pinned", p)
        for p, c in PINNED_WORKER_ROWS
    ]
    for key, name, processes in drains:
        if f"cores_{key}" not in result:  # the pinned rows, without taskset
            continue
        cores = result[f"cores_{key}"]
        plural = "es" if processes > 1 and key.startswith("skip") else ""
        ceiling = f"{min(2.0, result['cpus'] / cores):.2f}x" if processes == 1 else ""
        lines.append(
            f"| {name}{plural} | {result[f'cpu_{key}']:,.0f} µs | {cores:.2f} | {ceiling} |"
        )
    return lines


def write_docs(measured: Measured, runs: int, rounds: int) -> str:
    """Replace (or add) this benchmark's section of docs/benchmarks.md; returns it."""
    result = measured.medians
    commit_ms = result["commit_ms"]

    def steps(key: str, base: str | None = None) -> str:
        per_ms = 1000 / result[key]
        text = f"{result[key]:,.0f} steps/s | {per_ms:.2f} ms ({per_ms / commit_ms:.1f}x)"
        return text + (f" | {result[key] / result[base]:.2f}x" if base else " | ")

    lines = [
        SECTION,
        "",
        f"`python -m benchmarks scaleout --runs {runs} --rounds {rounds}`: "
        "10-step no-op workflows (`data.json.parse` steps, each a governed invocation with "
        f"its audit record; {runs} a row, at least {PG_WORKER_RUNS} for a worker row "
        f"and {SQLITE_THREAD_RUNS} for an in-process SQLite row), "
        "queued beforehand as the floor's jobs are, drained by warmed-up "
        "`aifr worker` processes on the local PostgreSQL "
        '15 (with the project\'s defaults, `workflows.overlap_commits = "auto"` among '
        "them: here one worker overlaps its commits and two or more do not, see "
        "docs/scaleout.md; the `overlap_commits = false` rows force it off), "
        "DBOS on the same server, and the floors; medians of "
        f"{rounds} alternating rounds in one run on a 2-core host (load average "
        f"{result['load_before']:.1f} at the start, {result['load_after']:.1f} at the end; "
        "the host is shared with other engineers' work, so read the ratios, not the "
        "absolute numbers). "
        "`ms/step` is wall time over steps (with runs at once, the amortized cost), "
        "`x commit` that over one INSERT + COMMIT measured in the same run.",
        "",
        "| row | steps/s | ms/step (x commit) | vs row above it |",
        "|---|---:|---:|---:|",
        f"| floor: one INSERT + COMMIT | | {commit_ms:.2f} ms (1.0x) | |",
        f"| floor: bare SKIP LOCKED claim-and-complete, 1 process | "
        f"{result['skip_locked_1']:,.0f} jobs/s | {1000 / result['skip_locked_1']:.2f} ms "
        f"({1000 / result['skip_locked_1'] / commit_ms:.1f}x) | |",
        f"| floor: CPython floor, queued governed steps (`benchmarks/pg_floor.py`), 1 process "
        f"| {steps('pg_floor')} |",
        f"| floor: bare SKIP LOCKED claim-and-complete, 2 processes | "
        f"{result['skip_locked_2']:,.0f} jobs/s | | "
        f"{result['skip_locked_2'] / result['skip_locked_1']:.2f}x |",
        f"| floor: CPython floor, 1 process of its own | {steps('pg_floors_1')} |",
        *(
            [f"| floor: CPython floor, {LONG_STEPS}-step runs | {steps('pg_floor_long')} |"]
            if "pg_floor_long" in result
            else []
        ),
        f"| floor: CPython floor, 2 processes, one queue and one chain | "
        f"{steps('pg_floors_2', 'pg_floors_1')} |",
    ]
    previous: dict[int, str] = {}
    for processes, concurrency in WORKER_ROWS:
        key = f"aifr_{processes}x{concurrency}"
        base = previous.get(concurrency) if concurrency != 4 else "aifr_2x8"
        lines.append(
            f"| aifr, {processes} worker process{'es' if processes > 1 else ''}, "
            f"`--concurrency {concurrency}` | {steps(key, base)} |"
        )
        previous[concurrency] = key
    if "aifr_long_1x1" in result:
        lines.append(
            f"| aifr, 1 worker process, `--concurrency 1`, {LONG_STEPS}-step runs | "
            f"{steps('aifr_long_1x1')} |"
        )
    if "paired_aifr_1x1" in result:
        lines += [
            f"| floor: CPython floor, 1 process, in slices taken in turns with the next row | "
            f"{steps('paired_pg_floor')} |",
            f"| aifr, 1 worker process, `--concurrency 1`, in slices taken in turns with the "
            f"floor | {steps('paired_aifr_1x1', 'paired_pg_floor')} |",
        ]
    if "paired_dbos_1" in result:
        lines += [
            f"| DBOS, 1 workflow at a time, in slices taken in turns with the next row | "
            f"{steps('paired_dbos_1')} |",
            f"| aifr, 1 worker process, `--concurrency 1`, in slices taken in turns with "
            f"DBOS | {steps('paired_dbos_aifr_1x1', 'paired_dbos_1')} |",
        ]
    lines += [
        f"| aifr, 1 worker process, `--concurrency 1`, `overlap_commits = false` | "
        f"{steps('inline_1x1')} |",
        f"| aifr, 2 worker processes, `--concurrency 1`, `overlap_commits = false` | "
        f"{steps('inline_2x1', 'inline_1x1')} |",
        f"| aifr in one process on PostgreSQL, 1 engine | {steps('pg_engines_1')} |",
        f"| aifr in one process on PostgreSQL, 8 engines at once | "
        f"{steps('pg_engines_8', 'pg_engines_1')} |",
        f"| DBOS {_version('dbos')}, 1 workflow at a time | {steps('dbos_1')} |",
        f"| DBOS, 8 threads | {steps('dbos_8', 'dbos_1')} |",
        f"| aifr on SQLite (FULL), 1 run at a time | {result['sqlite_1']:,.0f} steps/s | | |",
        f"| aifr on SQLite (FULL), 8 runs at once | {result['sqlite_8']:,.0f} steps/s | | "
        f"{result['sqlite_8'] / result['sqlite_1']:.2f}x |",
        f"| SQLite ceiling: 1 / user CPU per step (1 run, OFF) | {result['sqlite_ceiling']:,.0f} "
        f"steps/s | {1e6 / result['sqlite_ceiling']:.0f} µs CPU | "
        f"{result['sqlite_ceiling'] / result['sqlite_1']:.2f}x |",
        f"| CPython floor on threads, each its own file (FULL), 1 thread | "
        f"{result['floor_threads_1']:,.0f} steps/s | | |",
        f"| CPython floor on threads, each its own file (FULL), 8 threads | "
        f"{result['floor_threads_8']:,.0f} steps/s | | "
        f"{result['floor_threads_8'] / result['floor_threads_1']:.2f}x |",
        f"| CPython floor on threads, one file, group-committed (FULL), 1 thread | "
        f"{result['grouped_floor_1']:,.0f} steps/s | | |",
        f"| CPython floor on threads, one file, group-committed (FULL), 8 threads | "
        f"{result['grouped_floor_8']:,.0f} steps/s | | "
        f"{result['grouped_floor_8'] / result['grouped_floor_1']:.2f}x |",
        *_weighted_rows(result),
        *(
            _sqlite_worker_row(result, processes, concurrency)
            for processes, concurrency in SQLITE_WORKER_ROWS
        ),
        *_pinned_rows(result, steps),
        "",
        f"With 8 engines in one process, {result['pg_batch_8']:.1f} writes shared each "
        f"PostgreSQL commit (1 engine: {result['pg_batch_1']:.1f}).",
        "",
        *_split_lines(result),
        *_cpu_table(result),
        "",
        *(line.replace("goal (issue 21)", "goal") for line in verdict_table(verdicts(result))),
        "",
        "**Round by round.** Each goal's ratio in each round, read from that round's rows "
        "alone (the table above reads the medians of each row over the rounds):",
        "",
        *round_table(round_by_round(measured)),
        "",
    ]
    section = "\n".join(lines)
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
    pattern = re.compile(
        rf"^{re.escape(SECTION)}\n.*?(?=^## |^=======\n|\Z)", re.DOTALL | re.MULTILINE
    )
    if pattern.search(text):
        text = pattern.sub(lambda _match: section + NOTES + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + NOTES
    DOCS.write_text(text, encoding="utf-8")
    return section


NOTES = """
How to read it:

- **Group commit.** Steps of different runs in one process that finish together share
  one transaction (`aifr.storage.groupcommit`): the first writer leads, runs every
  queued write (straight through; job by job in savepoints only when one raised),
  commits once, and only then releases the waiters.
  A step is therefore durable before it counts as done, a fenced write (a lease that
  changed hands) fails alone, and a failed commit fails the whole batch, which wrote
  nothing. `tests/integration/workflows/test_group_commit.py` proves each of these on a
  SQLite file and on PostgreSQL.
- **The audit chain's lock, taken last.** Every audited transaction writes its rows
  first and takes the chain's row lock only at its end, on the server: one call to
  `aifr_audit_append` locks, reads the head, hashes and inserts the batch's records,
  and the commit follows in the same round trip, so the lock is held through no client
  round trip, only the append and the commit's flush (docs/scaleout.md, "The audit
  chain under concurrent writers"). Inside a process, batches form while the previous
  one commits. Across processes the chain's lock is one queue for every process's
  audit tail and commit, held through the flush; the bare SKIP LOCKED loop shares no
  lock, so its 2-process row shows what the host allowed in the same run.
- **Per-step cost.** A lone step is one statement and one round trip: the server
  function `aifr_step_recorded` locks the step's row under its fence, takes the chain's
  lock, inserts the record and writes the step's result once with the record's id, and
  the statement's commit flushes it; the client sends it through libpq directly
  (`aifr.storage.postgres.prepared_call`). The last step carries the run's end in the
  same kind of statement (`aifr_step_ends_run`), so a 10-step run drained by a worker
  costs 11 round trips and 11 commits: its claim (which starts it) and its steps
  (`tests/integration/workflows/test_pg_round_trips.py` counts them). Add the governed
  invocation's CPU (policy decision, validation, encoding the record). On a
  loaded host one flushed commit takes several
  milliseconds (about 0.2 ms on a quiet one), which flatters every `x commit` ratio;
  the restated row compares a step with one job of the bare SKIP LOCKED loop (claim,
  update, commit) measured in the same run, the least a queued durable step can cost.
- **The CPython floor on PostgreSQL** (`benchmarks/pg_floor.py`): the least a queued,
  leased, audited step can cost here. One process claims a queued run with `FOR UPDATE
  SKIP LOCKED` under a lease epoch, and for each step does the Python of
  `benchmarks/floor.py` (inputs and output validated, a memoized decision, the event's
  canonical JSON), then one statement in autocommit to a server function that writes
  the step under its fence, takes the chain's lock, hashes the record from the head and
  inserts it: one round trip and one commit a step, as aifr's `aifr_step_recorded`. No
  record of the run's start or end, no hooks, no redaction, no idempotency, no
  notifications. Its own `x commit` shows how far below it the issue's 1.5x of a commit
  lies, so the restated goal holds aifr at `--concurrency 1` to 1.5x of this floor, the
  goal issue 21 set for a durable step on SQLite against `benchmarks/floor.py`.
- **The floor and aifr in turns** (`paired_with_floor`). The floor's own row and
  aifr's are drained about half a minute apart in a round, and this host's neighbours
  load it in bursts shorter than that: in the run of 2026-11-29 04:46 the same code read
  0.63x to 2.13x over the floor round by round, and the CPU a step took moved as much
  as its time (a busy neighbour slows each instruction, not only the share of the
  cores). The paired rows drain the same runs in 6 slices, the floor and one worker
  taking turns (each warm, as in its own row), so both are timed under the same
  load; within the hour the slices gave 1.28x to 1.45x by round. The per-step goal is
  read on both: the paired verdict is the one a noisy host does not decide.
- **DBOS and aifr in turns** (`paired_with_dbos`). The same for DBOS's goal: DBOS,
  launched once and warm in a process of its own, runs its workflows one at a time in
  6 slices, taking turns with one warm worker draining its runs (fewer DBOS workflows,
  as each costs several of aifr's runs: the slices take about as long). Its own row and
  aifr's run about a minute apart in a round; in the run of 2026-11-29 07:43 their
  ratio moved from 5.16x to 7.98x round by round. Only the slices' wall time is taken
  on DBOS's side (its process is not metered).
- **The same floor in 2 processes** (`pg_floor_processes`): two processes of their own
  draining one queue and appending to one chain, against one such process (both spawned
  and warmed as the worker rows are). Every step takes the chain's lock and holds it to
  its commit, aifr's design as in docs/scaleout.md ("The audit chain under concurrent
  writers"), so this floor's 2/1 is what a second process gives an implementation that
  keeps that chain and does nothing else. Where it is below the issue's 1.7x, the
  restated goal holds aifr's 2/1 at `--concurrency 1` to 0.85 of it. The floor's step
  is mostly the commit's wait, held under the lock, so a second floor process mostly
  waits for the first; aifr's step is mostly its own CPU, which the two overlap.
- **Where aifr's step goes against it.** docs/scaleout.md ("Where a step goes, against
  the floor") splits a step's client and server CPU, aifr's and the floor's, part by
  part. The split shows a governed path spread over many parts, none holding more than
  a seventh of the client. When one commit is cheap, what is left of a step is CPU, so
  the ratio to the floor grows as the host's flush gets faster.
- **Runs queued beforehand.** Each worker row queues its runs while the workers,
  already connected and listening, are held (`SIGSTOP`), and times the draining from
  their release, as the floor times only the claiming of jobs inserted before it
  started. Until this was changed the clock also ran while this process queued the
  runs, whose CPU (and its backend's) took the same 2 cores from the workers. In one
  comparison (3 alternating rounds of 64 runs) 2 workers / 1 at `--concurrency 1` was
  1.49x with the runs queued beforehand and 1.41x with the queueing counted; at
  `--concurrency 8`, 0.96x and 1.05x: within the spread of the rounds either way.
- **Steady state, warmed up.** A worker row first has its workers drain 2 runs per
  engine untimed (pools connected, statements prepared, lazy imports done; a worker
  serves for hours), then times at least 300 runs; the bare loop's processes each do 50
  jobs untimed, then 3,000 timed (one per step of 300 runs), through a partial index of
  open jobs as aifr's claim uses one; DBOS runs 3 workflows untimed. Until 2026-11-26
  the worker rows timed 64 cold runs, about half a second with 2 workers, and the first
  claims, connections and imports of every process fell inside it, more of them the more
  processes and engines a row had: `--concurrency 8` read 2 workers / 1 at 0.79x, and
  warm on 300 runs 1.02x, 1.33x and 1.51x in three rounds. The rounds still move with
  the shared host's load (below), so compare medians of one run.
- **CPU and the host's ceiling.** Every timed drain is metered
  (`benchmarks/cpu_meter.py`): the CPU of the draining processes and of every
  PostgreSQL server process over the same span, per step (or job) and as cores kept
  busy. Two workers can give at most `cores / cores one kept busy` of one, and never
  more than 2x: at `--concurrency 1` one worker leaves most of a core idle (it waits for
  each step's commit), so 2x is within reach; at `--concurrency 8` one worker's Python
  already fills a core and its backends part of the other, so doubling it is above what
  2 cores allow, whatever the workers do. The restated goal asks 0.85 of that ceiling
  (the issue's 1.7x is 0.85 of 2x). The hypervisor's steal is not subtracted, so the
  ceiling is an upper bound; and a second worker may itself cost a step more CPU (the
  table's CPU per step, 1 worker against 2, shows whether it did).
- **The CPython floor on threads** (`floors_on_threads` in `benchmarks/floor.py`): the
  SQLite floor driven by 1 and by 8 threads of one process at FULL, each thread on its
  own file, so no lock stands between them and their fsyncs overlap as far as the disk
  allows; SQLite's module hands the GIL over around every call, and that is all they
  share. Each file is settled first, as aifr's are: on fresh files one thread paid a
  journalled size change at every commit while 8 threads' changes shared the file
  system's journal commits, which raised this floor's 8/1 by a fifth to a third.
  At `synchronous=OFF` the same floor on 8 threads gave 0.30x to 0.54x of one thread
  in two trial runs: with no fsync to overlap, the hand-offs are all that is left.
- **The grouped CPython floor on threads** (`benchmarks/group_floor.py`): the same
  lean step, but every thread's runs on one settled file with one audit chain, their
  writes group-committed by the least leader/follower batching (a leader writes the
  queue in one transaction, commits, hands the lead on, wakes the rest), as aifr keeps
  its runs. Its 8/1 is what 8 runs at once on threads can gain over one here with
  aifr's design and the leanest step, so it bounds the issue's 3x: where it is below
  3x, the goal is below the floor, and aifr's 8/1 is held to 0.85 of this floor's.
- **The weighted grouped floor** (`weighted_floor_rows` in `benchmarks/group_floor.py`):
  the grouped floor again, with each step made as heavy as aifr's by interpreter work
  alone, done before its write in the run's own thread (calibrated each round on the
  floor at OFF to the user CPU per step aifr's ceiling row measured in that round; its
  own figure is in its row). The leanest step is mostly its commit's wait, so 8 threads
  of it have a mostly idle interpreter to share; a step of aifr's weight is mostly CPU,
  and threads take turns at it. This floor keeps the weight and drops every part of
  aifr's machinery, so its 8/1, and its share of its own ceiling, are what threads of
  one CPython process give such a step here. Held to 0.85 of them, aifr's batching,
  locks and hand-offs are judged apart from the step's weight, which the per-step goals
  judge (`a durable workflow step / its CPython floor`, and on PostgreSQL the restated
  per-step goal).
- **SQLite worker rows.** `aifr worker` processes on one SQLite file at FULL, timed as
  the PostgreSQL rows are (runs queued while the workers are held), each on a fresh
  project settled by 30 runs, at least 300 runs a row. Their write transactions queue
  for SQLite's lock through the writer gate (docs/scaleout.md, "Several workers on one
  SQLite file"); the `aifr on SQLite` rows above them are engines on threads of the
  benchmark's own process (`benchmarks.workflow_bench`). The issue's 3x for 8 runs at
  once is checked on both: 8 threads in one process share one interpreter, and 2
  processes of 4 use the second core.
- **Pinned rows.** The same workers each started under `taskset -c N`, worker i on the
  i-th CPU: a worker's engine threads then hand the GIL to each other on one CPU instead
  of waking the other core for it (docs/scaleout.md, "Pinning a worker to a CPU", says
  when it pays and when it does not). The goals are checked pinned too; `taskset`
  missing, the rows say so.
- **DBOS** 3.4 ran with its system database on the same server (database
  `aifr_bench_dbos`), in its own process, with `@DBOS.step` no-ops. It keeps no audit
  chain: its step writes commit independently, and PostgreSQL's own WAL group commit
  shares their flushes.
- **The host is shared.** On a loaded host rows vary by round more than between some
  configurations (in one earlier run, 1 process at `--concurrency 1` gave 218, 190 and
  736 steps/s in its three rounds as other engineers' load came and went); compare
  ratios within one run only.
"""


def _version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "(missing)"


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
    measured = measure(dsn, args.runs, args.rounds)
    result = measured.medians
    for key, value in result.items():
        print(f"{key}: {value:,.2f}")
    print_verdicts(verdicts(result))
    for line in _split_lines(result):
        print(line)
    for verdict, ratios in round_by_round(measured):
        print(f"  {verdict.goal.text:<58} {verdict.what:<34} rounds: {_rounds_text(ratios)}")
    if not args.no_docs:
        print(write_docs(measured, args.runs, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
