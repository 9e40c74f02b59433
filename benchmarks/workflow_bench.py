"""Workflows: a 10-step no-op workflow on aifr vs DBOS vs LangGraph, and the commit floor.

Run: ``.venv/bin/python -m benchmarks workflow`` (or this file directly; ``make bench``
installs the peers). Writes the "## Workflows" section of docs/benchmarks.md.

Every engine runs the same 10-step workflow whose steps do nothing, on SQLite, at its
own default durability: aifr (``synchronous=FULL``, each step's result and its audit
record committed in one transaction before the next step), DBOS 3 with a SQLite
system database, and LangGraph with ``SqliteSaver`` (its default durability). The raw
floor is one ``BEGIN IMMEDIATE; INSERT; COMMIT`` at ``synchronous=FULL`` in WAL mode.
Engines are measured in interleaved rounds so disk noise hits all of them alike.

Issue 7 goal: per-step overhead within 1.5x of one synchronous SQLite commit.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aifr.audit import AuditLedger
from aifr.capabilities import CapabilityRegistry, capability
from aifr.invocation import Runtime
from aifr.policy import PolicyEngine, load_policy_text
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.audit import SqliteAuditStore
from aifr.storage.sqlite.idempotency import SqliteIdempotencyStore
from aifr.storage.sqlite.runs import SqliteRunStore
from aifr.storage.sqlite.step_results import StepResultStore
from aifr.workflows import RunState, WorkflowBuilder, WorkflowEngine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script too: ``benchmarks.floor`` must import
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Workflows"

from benchmarks import goals  # noqa: E402  # after the path insert above
from benchmarks.goals import Verdict  # noqa: E402

STEPS = 10
RUNS = int(os.environ.get("AIFR_BENCH_WF_RUNS", "200"))
ROUNDS = 10
THREADS = 8
POLICY = """
version: 1
rules:
  - id: allow-noop
    when: {capability: "bench.noop"}
    decision: ALLOW
"""


def _noop_registry() -> CapabilityRegistry:
    @capability("bench.noop", operation="READ", risk="LOW")
    def noop(n: int) -> dict[str, int]:
        """Do nothing."""
        return {"n": n}

    return CapabilityRegistry([noop])


class AifrBench:
    """aifr's engine on a fresh state database at synchronous=FULL."""

    def __init__(self, directory: Path, sync_execution: str, synchronous: str = "FULL") -> None:
        self.database = SqliteDatabase(
            directory / f"aifr-{sync_execution}-{synchronous}.db",
            synchronous=synchronous,  # type: ignore[arg-type]
        )
        ledger = AuditLedger(SqliteAuditStore(self.database))
        runs = self.runs = SqliteRunStore(self.database, ledger)
        self.runtime = Runtime(
            _noop_registry(),
            PolicyEngine(load_policy_text([("policies/bench.yaml", POLICY)])),
            ledger,
            idempotency=StepResultStore(runs, SqliteIdempotencyStore(self.database, ledger)),
            sync_execution=sync_execution,  # type: ignore[arg-type]
        )
        self.ledger = ledger
        self.engine = WorkflowEngine(self.runtime, runs)
        builder = WorkflowBuilder("ten-noops")
        for n in range(STEPS):
            builder.step(f"s{n}", "bench.noop", n=n)
        self.spec = builder.build()

    def run(self) -> None:
        view = self.engine.start(self.spec, {}, "bench")
        if view.state is not RunState.COMPLETED:
            raise RuntimeError(f"aifr run ended {view.state}")

    def settle(self, most_runs: int = 500) -> int:
        """Run until the WAL file has reached its working size; returns the runs it took.

        Settled (:func:`benchmarks.floor.settle_wal`), every configuration is timed on
        the WAL a long-lived process writes, not on a new database's first minutes.
        """
        from benchmarks.floor import settle_wal

        return settle_wal(self.database.connect(), self.database.path, self.run, most_runs)

    def close(self) -> None:
        if not self.ledger.verify().ok:
            raise RuntimeError("aifr audit chain broken")
        self.runtime.close()
        self.database.close()


class DbosBench:
    """DBOS with a SQLite system database (its default durability: every step recorded).

    ``system_database_url``: another system database instead (the scale-out rows give
    it PostgreSQL's), under the application name ``name``.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        system_database_url: str | None = None,
        name: str = "aifr-bench",
    ) -> None:
        from dbos import DBOS

        if system_database_url is None:
            if directory is None:
                raise ValueError("DbosBench needs a directory or a system database URL")
            system_database_url = f"sqlite:///{directory / 'dbos.sqlite'}"
        logging.getLogger("dbos").setLevel(logging.WARNING)
        self.dbos = DBOS
        DBOS(
            config={
                "name": name,
                "system_database_url": system_database_url,
                "log_level": "WARNING",
                "run_admin_server": False,
            }  # type: ignore[typeddict-unknown-key]
        )

        @DBOS.step()
        def noop(n: int) -> int:
            return n

        @DBOS.workflow()
        def ten_noops() -> int:
            total = 0
            for n in range(STEPS):
                total += noop(n)
            return total

        self.workflow = ten_noops
        DBOS.launch()

    def run(self) -> None:
        self.workflow()

    def close(self) -> None:
        self.dbos.destroy()


class LangGraphBench:
    """LangGraph, ten chained nodes, checkpointed by SqliteSaver at its default durability."""

    def __init__(self, directory: Path) -> None:
        from typing import TypedDict

        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.graph import END, START, StateGraph

        class State(TypedDict):
            n: int

        graph = StateGraph(State)
        previous = START
        for n in range(STEPS):
            graph.add_node(f"s{n}", lambda state: {"n": state["n"] + 1})
            graph.add_edge(previous, f"s{n}")
            previous = f"s{n}"
        graph.add_edge(previous, END)
        self.conn = sqlite3.connect(directory / "langgraph.sqlite", check_same_thread=False)
        self.app = graph.compile(checkpointer=SqliteSaver(self.conn))
        self.count = 0

    def run(self) -> None:
        self.count += 1
        out = self.app.invoke({"n": 0}, {"configurable": {"thread_id": f"t{self.count}"}})
        if out["n"] != STEPS:
            raise RuntimeError("langgraph run incomplete")

    def close(self) -> None:
        self.conn.close()


class FloorBench:
    """The CPython floor of a durable 10-step run (``benchmarks.floor``): the least any
    CPython engine could pay per step here, a governed no-op and its audited step row
    committed together."""

    def __init__(self, directory: Path, synchronous: str = "FULL") -> None:
        from benchmarks.floor import LeanFloor

        self.floor = LeanFloor(directory / f"floor-{synchronous}.db", synchronous)

    def run(self) -> None:
        self.floor.run(STEPS)

    def close(self) -> None:
        self.floor.close()


class RawCommit:
    """The floor: one durable WAL commit of one row."""

    def __init__(self, directory: Path) -> None:
        self.conn = sqlite3.connect(directory / "raw.db", isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")

    def run(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("INSERT INTO t (payload) VALUES (?)", ("x" * 400,))
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def _time(run: Callable[[], None], n: int, samples: list[float]) -> None:
    for _ in range(n):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class ConcurrentProfile:
    """Runs at once on one :class:`AifrBench`: their throughput and what each step cost.

    CPU is the whole process's (``getrusage``) divided by the steps; ``switches`` counts
    voluntary context switches per step (a thread sleeping on its commit, on the GIL, on
    an fsync); ``jobs_per_commit`` is the group commit's batch size over the window.
    """

    steps_per_s: float
    user_us: float
    system_us: float
    jobs_per_commit: float
    switches: float

    @property
    def busy(self) -> float:
        """Cores the process kept busy on average (user and system CPU over wall time)."""
        return (self.user_us + self.system_us) * self.steps_per_s / 1e6


def concurrent_profile(bench: AifrBench, threads: int, runs_each: int) -> ConcurrentProfile:
    """``threads`` threads each driving ``runs_each`` runs at once, from one barrier."""
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(runs_each):
            bench.run()

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    group = bench.runs.group
    commits, jobs = group.commits, group.jobs
    barrier.wait()
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    steps = threads * runs_each * STEPS
    return ConcurrentProfile(
        steps_per_s=steps / elapsed,
        user_us=(after.ru_utime - before.ru_utime) / steps * 1e6,
        system_us=(after.ru_stime - before.ru_stime) / steps * 1e6,
        jobs_per_commit=(group.jobs - jobs) / max(1, group.commits - commits),
        switches=(after.ru_nvcsw - before.ru_nvcsw) / steps,
    )


def _concurrent_steps_per_s(bench: AifrBench, threads: int, runs_each: int) -> float:
    """Steps/s of ``threads`` runs at once, on a database settled first (``settle``)."""
    bench.settle()
    return concurrent_profile(bench, threads, runs_each).steps_per_s


def cpu_per_step_us(bench: AifrBench, runs: int) -> float:
    """User CPU time per step (µs) of ``runs`` runs driven one at a time on ``bench``
    (:func:`benchmarks.floor.user_cpu_per_step_us`)."""
    from benchmarks.floor import user_cpu_per_step_us

    return user_cpu_per_step_us(bench.run, runs, STEPS)


def sqlite_cpu_ceiling(runs: int, synchronous: str = "OFF") -> float:
    """Steps/s one process can give at most on SQLite: 1 / user CPU per step of one run.

    Threads of one process take turns at the GIL, so however many runs go at once they
    cannot pass this (group commit shares fsyncs, not interpreter work): ``8 runs / 1
    run`` can reach only ``ceiling / 1 run``. Measured at ``synchronous=OFF`` by default:
    at FULL a lone run's user CPU also holds the slowdown after each fsync's sleep (cold
    caches, a lower clock; 2x the OFF figure on the shared host), which runs that
    overlap their commits mostly do not pay, so it would not bound them.
    """
    directory = Path(tempfile.mkdtemp(prefix="aifr-cpu-ceiling-"))
    bench = AifrBench(directory, "auto", synchronous)
    try:
        for _ in range(3):
            bench.run()
        return 1e6 / cpu_per_step_us(bench, max(1, runs))
    finally:
        bench.close()
        shutil.rmtree(directory, ignore_errors=True)


def _versions() -> str:
    import importlib.metadata as md

    found = []
    for name in ("dbos", "langgraph", "langgraph-checkpoint-sqlite"):
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            found.append(f"{name} missing")
    return ", ".join(found)


def measure(directory: Path) -> dict[str, Any]:
    """Median per-step time (µs) of every engine, and aifr's concurrent throughput."""
    engines: dict[str, Any] = {
        "raw": RawCommit(directory),
        "floor": FloorBench(directory),
        "aifr": AifrBench(directory, "auto"),
        "aifr_thread": AifrBench(directory, "thread"),
        "floor_normal": FloorBench(directory, "NORMAL"),
        "aifr_normal": AifrBench(directory, "auto", "NORMAL"),
        "aifr_off": AifrBench(directory, "auto", "OFF"),
    }
    for name, factory in (("dbos", DbosBench), ("langgraph", LangGraphBench)):
        try:
            engines[name] = factory(directory)
        except ImportError:
            print(f"{name} is not installed (pip install -e '.[bench]'); skipped", file=sys.stderr)
    samples: dict[str, list[float]] = {name: [] for name in engines}
    for engine in engines.values():  # warm up
        _time(engine.run, 5, [])
    per_round = max(1, RUNS // ROUNDS)
    for _ in range(ROUNDS):
        for name, engine in engines.items():
            _time(engine.run, per_round * (STEPS if name == "raw" else 1), samples[name])
    result: dict[str, Any] = {}
    for name, values in samples.items():
        per_step = statistics.median(values) / (1 if name == "raw" else STEPS)
        result[name] = per_step * 1e6
    result["aifr_concurrent"] = _concurrent_steps_per_s(engines["aifr"], THREADS, 10)
    for engine in engines.values():
        engine.close()
    return result


def _table(result: dict[str, Any]) -> str:
    raw = result["raw"]
    rows = [
        ("raw SQLite commit (floor)", "raw", "one `BEGIN IMMEDIATE; INSERT; COMMIT`, WAL, FULL"),
        (
            "CPython floor (benchmarks/floor.py)",
            "floor",
            "the least a governed, audited, durable step costs in CPython; no engine features",
        ),
        (
            "aifr, defaults (auto)",
            "aifr",
            "synchronous=FULL; the step declares no timeout, so its handler runs inline",
        ),
        (
            "aifr, every handler under a hard timeout (thread)",
            "aifr_thread",
            '`runtime.sync_execution = "thread"`: handlers in the pool',
        ),
        (
            "CPython floor, synchronous=NORMAL",
            "floor_normal",
            "the floor above at NORMAL",
        ),
        ("aifr, synchronous=NORMAL", "aifr_normal", "defaults otherwise"),
        (
            "aifr, synchronous=OFF",
            "aifr_off",
            "not durable: the CPU cost of the pipeline and engine alone",
        ),
        ("DBOS (SQLite system DB)", "dbos", "`@DBOS.workflow` + 10 `@DBOS.step`"),
        ("LangGraph + SqliteSaver", "langgraph", "10 chained nodes, default durability"),
    ]
    lines = [
        "| engine | per step µs (median) | vs one commit | aifr (defaults) is faster by | notes |",
        "|---|---:|---:|---:|---|",
    ]
    for label, key, notes in rows:
        if key not in result:
            lines.append(f"| {label} | - | - | - | not installed |")
            continue
        value = result[key]
        faster = f"{value / result['aifr']:.1f}x" if key in ("dbos", "langgraph") else ""
        lines.append(f"| {label} | {value:,.1f} | {value / raw:.2f}x | {faster} | {notes} |")
    return "\n".join(lines)


REFERENCE_COMMIT_US = 170.0


def _projected(result: dict[str, Any]) -> float:
    """Per-step ratio at the reference commit time: 1.1 commits plus the CPU per step."""
    return (1.1 * REFERENCE_COMMIT_US + result["aifr_off"]) / REFERENCE_COMMIT_US


def goal_verdicts(result: dict[str, Any]) -> list[Verdict]:
    """Issue 21: a durable step at most 1.5x its CPython floor, at FULL and at NORMAL."""
    return [
        Verdict("FULL, auto (defaults)", result["aifr"] / result["floor"], goals.STEP),
        Verdict("FULL, thread", result["aifr_thread"] / result["floor"], goals.STEP),
        Verdict("NORMAL, auto", result["aifr_normal"] / result["floor_normal"], goals.STEP),
    ]


def write_docs(result: dict[str, Any]) -> str:
    """Replace the "## Workflows" section of docs/benchmarks.md; returns the section."""
    ratio = result["aifr"] / result["raw"]
    goal = "met" if ratio <= 1.5 else "not met"
    section = (
        f"{SECTION}\n\n"
        f"`python -m benchmarks workflow` on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {_versions()}; "
        f"{RUNS} runs of a 10-step no-op workflow per engine in {ROUNDS} interleaved rounds, "
        f"{time.strftime('%Y-%m-%d')}. Per-step time is the median run time divided by 10 "
        "(it includes starting and finishing the run).\n\n"
        f"{_table(result)}\n\n" + "\n".join(goals.verdict_table(goal_verdicts(result))) + "\n\n"
        f"- Earlier goal (issue 7): per-step overhead within 1.5x of one synchronous SQLite commit: "
        f"{ratio:.2f}x, {goal}. Each aifr step goes through the whole governed pipeline "
        "(resolve, validate, policy, execute, validate output) and commits its result and "
        "its audit record in one transaction; a run adds one commit to start, and its last "
        "step's commit also ends the run (11 commits for 10 steps).\n"
        f"- The CPython floor (a governed no-op and its step row, hash-chained and committed "
        f"together, written as tightly as Python allows, no engine features) costs "
        f"{result['floor'] / result['raw']:.2f}x one commit in the same run: the commit "
        "writes two rows instead of one, and the Python work after each fsync runs on a "
        f"core whose caches the flush evicted. aifr is {result['aifr'] / result['floor']:.2f}x "
        "the floor.\n"
        f"- Where the time goes: about {result['aifr_off']:,.0f} µs per step is CPU (the "
        "synchronous=OFF row: governed pipeline, step bookkeeping, audit hashing), the rest "
        "is fsync. fsync on this shared machine varies from run to run (0.2 to 4 ms per "
        "commit), so the ratio is lowest when the disk is slow. At the issue's reference "
        f"commit of {REFERENCE_COMMIT_US:.0f} µs, 1.1 commits and the measured CPU per step "
        f"come to {_projected(result):.2f}x.\n"
        f"- {THREADS} threads running workflows concurrently: "
        f"{result['aifr_concurrent']:,.0f} durable steps/s "
        f"({result['aifr_concurrent'] * result['aifr'] / 1e6:.1f}x one thread's rate: "
        "runs finishing steps at the same time share a commit).\n"
    )
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOCS.write_text(text, encoding="utf-8")
    return section


def profile_concurrency(runs: int, rounds: int) -> None:
    """Print 1 run and ``THREADS`` runs at once (FULL) against the CPU ceiling, per round.

    Alternating rounds, each on a settled database of its own, with the process's CPU
    per step, the group commit's batch size and the context switches per step: what
    the scale-out benchmark's SQLite rows are made of. Writes no docs.
    """
    print(f"load average {os.getloadavg()[0]:.2f}; {runs} runs per row and round")
    for round_no in range(rounds):
        ceiling = sqlite_cpu_ceiling(runs)
        print(f"round {round_no}: ceiling {ceiling:,.0f} steps/s ({1e6 / ceiling:.0f} µs CPU)")
        for threads in (1, THREADS):
            directory = Path(tempfile.mkdtemp(prefix="aifr-wf-concurrency-"))
            bench = AifrBench(directory, "auto")
            try:
                bench.settle()
                got = concurrent_profile(bench, threads, max(1, runs // threads))
            finally:
                bench.close()
                shutil.rmtree(directory, ignore_errors=True)
            print(
                f"  {threads} at once: {got.steps_per_s:,.0f} steps/s "
                f"({got.steps_per_s / ceiling:.2f} of the ceiling), CPU per step "
                f"{got.user_us:.0f} µs user + {got.system_us:.0f} µs system, "
                f"{got.busy:.2f} cores busy, {got.jobs_per_commit:.1f} jobs per commit, "
                f"{got.switches:.1f} switches per step",
                flush=True,
            )
    print(f"load average {os.getloadavg()[0]:.2f}")


def main() -> None:
    global RUNS  # one knob the table header reports too
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS, help="runs per engine (all rounds)")
    parser.add_argument("--no-docs", action="store_true", help="print, do not write the docs")
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="ROUNDS",
        help="only profile 1 and 8 runs at once on SQLite for ROUNDS rounds (no docs)",
    )
    args = parser.parse_args(sys.argv[2:] if sys.argv[1:2] == ["workflow"] else sys.argv[1:])
    if args.concurrency:
        profile_concurrency(args.runs, args.concurrency)
        return
    RUNS = args.runs
    with tempfile.TemporaryDirectory(prefix="aifr-wf-bench-", dir=ROOT) as directory:
        result = measure(Path(directory))
    print(_table(result) if args.no_docs else write_docs(result))
    goals.print_verdicts(goal_verdicts(result))


if __name__ == "__main__":
    main()
