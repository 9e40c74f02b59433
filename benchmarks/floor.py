"""The CPython floor: the least a durable, audited call or workflow step can cost here.

The raw commit floor (``BEGIN IMMEDIATE; INSERT; COMMIT`` of one row) says what the
disk costs. It does not say what Python costs: a governed call must also validate its
inputs and output, look up a decision, build a hash-chained record and write a row of
seventeen columns, and after an fsync'd commit that work runs on a core whose caches
the kernel's flush has just evicted. This module does the minimum of that work, as
tightly as Python allows, so the benchmarks can report how far aifr is from what any
CPython implementation could reach on the same host, in the same run.

It is a measuring stick, never used by aifr: no hooks, no request context, no
redaction, no idempotency, no circuit breaker, no policy engine (a dict lookup stands
in for a memoized decision), no error paths. Each governed call or step still does what
durability and tamper evidence require: the same record columns as aifr's ledger, the
same SHA-256 chain over canonical JSON, one transaction per call or step, durable at
the given ``synchronous`` level before it returns.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import resource
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, TypeAdapter

from benchmarks.threads import timed_on_threads

__all__ = [
    "CANONICAL",
    "LeanFloor",
    "LeanGovernance",
    "LeanInvocation",
    "floors_on_threads",
    "settle_wal",
    "user_cpu_per_step_us",
]

_COLUMNS = (
    "seq, id, ts, kind, principal, capability_id, capability_fingerprint, decision, rule_id, "
    "inputs_digest, outcome, trace_id, request_id, run_id, details, prev_hash, hash"
)
_INSERT_RECORD = f"INSERT INTO floor_audit ({_COLUMNS}) VALUES ({', '.join('?' * 17)})"
_FINISH_STEP = (
    "UPDATE floor_steps SET state = 'completed', output = ?, finished_at = ? "
    "WHERE run_id = ? AND step_id = ?"
)
CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_EMPTY_DIGEST = hashlib.sha256(b"{}").hexdigest()


class _NoInputs(BaseModel):
    pass


class LeanInvocation(NamedTuple):
    """What a governed no-op produced, ready to be recorded: its output and audit event."""

    output: dict[str, Any]
    request_id: str
    decision: str
    rule: str
    inputs_digest: str
    details: str
    event: str
    """The event's canonical JSON, as the chain hashes it."""


class LeanGovernance:
    """The Python work of a governed no-op, with no store: validate, decide, describe.

    Shared by the floors of each backend (:class:`LeanFloor` on SQLite,
    ``benchmarks.pg_floor`` on PostgreSQL), which differ only in how they write.
    """

    def __init__(self) -> None:
        self._inputs = TypeAdapter(_NoInputs)
        self._step_inputs = TypeAdapter(dict[str, int])
        self._output = TypeAdapter(dict[str, Any])
        self._decisions = {("bench.noop", "bench"): ("ALLOW", "allow-bench")}

    def call(self, started: float) -> LeanInvocation:
        """A call with no inputs (validated all the same)."""
        self._inputs.validate_python({})
        return self.invoke(started, _EMPTY_DIGEST, None, None)

    def step(self, started: float, n: int, run_id: str) -> LeanInvocation:
        """Step ``s<n>`` of ``run_id``: its inputs validated and digested, then invoked."""
        return self.invoke(started, self.step_digest(n), run_id, f"s{n}")

    def step_digest(self, n: int) -> str:
        """Step ``s<n>``'s inputs validated, and their digest: what precedes its effect."""
        inputs = self._step_inputs.validate_python({"n": n})
        return hashlib.sha256(CANONICAL.encode(inputs).encode()).hexdigest()

    def invoke(
        self, started: float, digest: str, run_id: str | None, step_id: str | None
    ) -> LeanInvocation:
        """Decide (a memoized decision), run the no-op, validate its output, describe it."""
        request_id = os.urandom(16).hex()
        decision, rule = self._decisions[("bench.noop", "bench")]
        output = self._output.validate_python({"ok": True})
        details = CANONICAL.encode(
            {"status": "ok", "step_id": step_id, "duration_s": time.perf_counter() - started}
        )
        event = (
            '{"capability_fingerprint":"fp","capability_id":"bench.noop",'
            f'"decision":"{decision}","details":{details},"inputs_digest":"{digest}",'
            '"kind":"invocation","outcome":"ok","principal":"bench",'
            f'"request_id":"{request_id}","rule_id":"{rule}",'
            f'"run_id":{json.dumps(run_id)},"trace_id":"{request_id}"}}'
        )
        return LeanInvocation(output, request_id, decision, rule, digest, details, event)


def user_cpu_per_step_us(run: Callable[[], object], runs: int, steps: int) -> float:
    """User CPU time per step (µs) of ``runs`` calls of ``run`` (each a run of ``steps``).

    User time of the whole process, the GC paused as in the timed rows. Kernel time is
    left out: at FULL it is mostly the fsync's, spent with the GIL released, so threads
    overlap it; the interpreter's own work is what they take turns at. One function for
    aifr's ceiling and the weighted floor's calibration, so both weigh a step alike.
    """
    gc.collect()
    gc.disable()
    try:
        started = resource.getrusage(resource.RUSAGE_SELF).ru_utime
        for _ in range(runs):
            run()
        used = resource.getrusage(resource.RUSAGE_SELF).ru_utime - started
    finally:
        gc.enable()
    return used / (runs * steps) * 1e6


def settle_wal(
    conn: sqlite3.Connection, database: Path, run: Callable[[], object], most_runs: int = 500
) -> int:
    """Call ``run`` until ``database``'s WAL has reached its working size; the calls it took.

    A fresh file's WAL grows with every commit until the first automatic checkpoint
    (``wal_autocheckpoint`` pages, 1,000 by default); after it SQLite writes the WAL over
    from its start. A commit that grows the file costs its fsync a journalled size
    change too (on ext4 about 1.5x the latency of one that overwrites, and more system
    CPU), so steps timed on a new database measure its first minutes, not a running
    process. ``conn`` is any connection to ``database``.
    """
    pages = int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
    working = 32 + pages * (24 + int(conn.execute("PRAGMA page_size").fetchone()[0]))
    wal = Path(f"{database}-wal")  # a 32-byte header, a 24-byte one per frame
    done = 0
    while done < most_runs and wal.exists() and wal.stat().st_size < working:
        run()
        done += 1
    return done


class LeanFloor:
    """A minimal governed call and workflow step on their own SQLite file."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.path = Path(path)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        text = ", ".join(f"{name} TEXT" for name in _COLUMNS.split(", ")[1:])
        self.conn.execute(f"CREATE TABLE floor_audit (seq INTEGER PRIMARY KEY, {text})")
        self.conn.execute("CREATE TABLE floor_runs (run_id TEXT PRIMARY KEY, state TEXT NOT NULL)")
        self.conn.execute(
            "CREATE TABLE floor_steps (run_id TEXT, step_id TEXT, state TEXT NOT NULL, "
            "output TEXT, finished_at TEXT, PRIMARY KEY (run_id, step_id))"
        )
        self._governance = LeanGovernance()
        self._seq, self._head = 0, "0" * 64

    def call(self) -> dict[str, Any]:
        """One governed no-op call: validated, decided, executed, audited, committed."""
        return self._record(self._governance.call(time.perf_counter()), None, None)

    def run(self, steps: int) -> None:
        """A workflow run of ``steps`` no-op steps: one commit to start, one per step."""
        run_id = os.urandom(16).hex()
        self.conn.execute("BEGIN IMMEDIATE")
        self.start_in(self.conn, run_id, steps)
        self.conn.execute("COMMIT")
        for n in range(steps):
            invocation = self._governance.step(time.perf_counter(), n, run_id)
            self._record(invocation, run_id, f"s{n}", last=n == steps - 1)

    @staticmethod
    def start_in(conn: sqlite3.Connection, run_id: str, steps: int) -> None:
        """Write a new run and its pending steps inside ``conn``'s open transaction."""
        conn.execute("INSERT INTO floor_runs VALUES (?, 'running')", (run_id,))
        conn.executemany(
            "INSERT INTO floor_steps (run_id, step_id, state) VALUES (?, ?, 'pending')",
            [(run_id, f"s{n}") for n in range(steps)],
        )

    def _record(
        self, invocation: LeanInvocation, run_id: str | None, step_id: str | None, *,
        last: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """Append the invocation's record (and finish its step) in one durable transaction."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        self.record_in(conn, invocation, run_id, step_id, last=last)
        conn.execute("COMMIT")
        return invocation.output

    def record_in(
        self, conn: sqlite3.Connection, invocation: LeanInvocation, run_id: str | None,
        step_id: str | None, *, last: bool = False,
    ) -> None:  # fmt: skip
        """Inside ``conn``'s open write transaction: chain and insert the invocation's
        record from the head this floor holds, and finish its step (and run, if ``last``).

        The head is this object's: only its own writers append to its file, one
        transaction at a time, and the floor has no error path to roll it back for.
        """
        now = time.time()
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        seq, prev = self._seq + 1, self._head
        record_id = f"au-{seq}-{os.urandom(8).hex()}"
        document = (
            f'{{"event":{invocation.event},"id":"{record_id}","prev_hash":"{prev}",'
            f'"seq":{seq},"ts":"{ts}"}}'
        )
        digest_hash = hashlib.sha256(document.encode()).hexdigest()
        conn.execute(
            _INSERT_RECORD,
            (seq, record_id, ts, "invocation", "bench", "bench.noop", "fp", invocation.decision,
             invocation.rule, invocation.inputs_digest, "ok", invocation.request_id,
             invocation.request_id, run_id, invocation.details, prev, digest_hash),
        )  # fmt: skip
        if step_id is not None:
            conn.execute(_FINISH_STEP, (CANONICAL.encode(invocation.output), ts, run_id, step_id))
            if last:
                conn.execute(
                    "UPDATE floor_runs SET state = 'completed' WHERE run_id = ?", (run_id,)
                )
        self._seq, self._head = seq, digest_hash

    def settle(self, steps: int) -> int:
        """Runs of ``steps`` steps until the WAL has reached its working size (see
        :func:`settle_wal`); returns the runs it took."""
        return settle_wal(self.conn, self.path, functools.partial(self.run, steps))

    def close(self) -> None:
        self.conn.close()


def floors_on_threads(threads: int, runs_each: int, steps: int, synchronous: str) -> float:
    """Steps/s of ``threads`` floors, one per thread of this process, each on its own file.

    They share no lock and no file: each thread's commits flush its own file, so their
    fsyncs overlap as far as the disk lets them, and otherwise they only take turns at
    the interpreter, handed over at every SQLite call (the module releases the GIL
    around each). So 8 of these over 1 is what 8 runs at once on threads of one CPython
    process gain here for the leanest step when they share nothing, not even a commit
    (``benchmarks.group_floor`` shares commits, which gains more). Each floor drives 3
    runs first, then settles its file
    (:meth:`LeanFloor.settle`), as aifr's rows settle theirs: on fresh files one thread
    paid a journalled size change at every commit while 8 threads' changes shared the
    file system's journal commits, which raised the floor's 8 / 1 by a fifth to a third.
    """
    directory = Path(tempfile.mkdtemp(prefix="aifr-floor-threads-"))
    floors = [LeanFloor(directory / f"floor-{n}.db", synchronous) for n in range(threads)]
    try:
        for floor in floors:
            for _ in range(3):
                floor.run(steps)
            floor.settle(steps)

        def drive(floor: LeanFloor) -> None:
            for _ in range(runs_each):
                floor.run(steps)

        bodies = [functools.partial(drive, floor) for floor in floors]
        return threads * runs_each * steps / timed_on_threads(bodies)
    finally:
        for floor in floors:
            floor.close()
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()
