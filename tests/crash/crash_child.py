"""The process the crash harness kills: drives one 10-step compensable workflow.

Usage: ``crash_child.py WORKDIR RUN_ID FAIL_STEP [KIND:N]``. It resumes the run if it
exists (recovery, as any engine start does) or starts it. With ``KIND:N`` it kills
itself with SIGKILL at the N-th event of that kind:

- ``enter``: a step's handler was entered, before its effect (between steps);
- ``effect``: a step's effect is in the effects log, its result not yet committed;
- ``write``: an ``INSERT``/``UPDATE``/``DELETE`` is starting (inside a transaction,
  with some of its writes done and others not);
- ``commit``: a SQLite ``COMMIT`` is starting (inside a commit);
- ``after``: the statement after a ``COMMIT`` is starting (just after a commit).

Effects go to ``WORKDIR/effects.log``, outside the database; a handler honours its
idempotency key by finding its own line there.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

from aifr.audit import AuditLedger
from aifr.capabilities import CallInfo, CapabilityRegistry, capability
from aifr.invocation import Runtime
from aifr.policy import PolicyEngine, load_policy_text
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.audit import SqliteAuditStore
from aifr.storage.sqlite.idempotency import SqliteIdempotencyStore
from aifr.storage.sqlite.runs import SqliteRunStore
from aifr.storage.sqlite.step_results import StepResultStore
from aifr.workflows import WorkflowBuilder, WorkflowEngine

STEPS = 10
POLICY = """
version: 1
default: DENY
rules:
  - id: allow-crash
    when: {capability: "crash.*"}
    decision: ALLOW
"""

_WRITES = frozenset({"INSERT", "UPDATE", "DELETE"})


class KillSwitch:
    """Counts events and SIGKILLs this process at the planned one."""

    def __init__(self, plan: str | None) -> None:
        self.kind, _, n = (plan or ":").partition(":")
        self.target = int(n) if n else 0
        self.seen: dict[str, int] = {}
        self.after_commit = False

    def event(self, kind: str) -> None:
        count = self.seen[kind] = self.seen.get(kind, 0) + 1
        if kind == self.kind and count == self.target:
            os.kill(os.getpid(), signal.SIGKILL)

    def trace(self, statement: str) -> None:
        if self.after_commit:
            self.after_commit = False
            self.event("after")
        verb = statement.lstrip()[:6].upper()
        if verb in _WRITES:
            self.event("write")
        elif verb == "COMMIT":
            self.event("commit")
            self.after_commit = True


class TracedDatabase(SqliteDatabase):
    """The state database with every connection traced by the kill switch."""

    def __init__(self, path: Path, switch: KillSwitch) -> None:
        super().__init__(path, synchronous="FULL")
        self.switch = switch

    def new_connection(self) -> sqlite3.Connection:
        conn = super().new_connection()
        conn.set_trace_callback(self.switch.trace)
        return conn


def append_effect(log: Path, line: str) -> None:
    with log.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def has_effect(log: Path, line: str) -> bool:
    return log.exists() and line in log.read_text(encoding="utf-8").splitlines()


def registry(log: Path, switch: KillSwitch, fail_step: int) -> CapabilityRegistry:
    @capability(
        "crash.effect", operation="WRITE", risk="MEDIUM", compensation="crash.undo",
        side_effect_scope="effects log",
    )  # fmt: skip
    def effect(step: int, info: CallInfo) -> dict[str, Any]:
        """Do step N's effect once per idempotency key."""
        switch.event("enter")
        if step == fail_step:
            raise RuntimeError(f"step {step} fails on purpose")
        line = f"do {step} {info.idempotency_key}"
        if not has_effect(log, line):
            append_effect(log, line)
        switch.event("effect")
        return {"step": step, "undo": {"step": step}}

    @capability("crash.undo", operation="WRITE", risk="MEDIUM", side_effect_scope="effects log")
    def undo(step: int, info: CallInfo) -> dict[str, int]:
        """Undo step N's effect once per idempotency key."""
        switch.event("enter")
        line = f"undo {step} {info.idempotency_key}"
        if not has_effect(log, line):
            append_effect(log, line)
        switch.event("effect")
        return {"step": step}

    return CapabilityRegistry([effect, undo])


def main(argv: list[str]) -> int:
    workdir, run_id, fail_step = Path(argv[0]), argv[1], int(argv[2])
    switch = KillSwitch(argv[3] if len(argv) > 3 else None)
    database = TracedDatabase(workdir / "state.db", switch)
    ledger = AuditLedger(SqliteAuditStore(database))
    runs = SqliteRunStore(database, ledger)
    reg = registry(workdir / "effects.log", switch, fail_step)
    runtime = Runtime(
        reg,
        PolicyEngine(load_policy_text([("policies/crash.yaml", POLICY)])),
        ledger,
        idempotency=StepResultStore(runs, SqliteIdempotencyStore(database, ledger)),
        sync_execution="inline",
    )
    engine = WorkflowEngine(runtime, runs, lease_ttl_s=60)
    builder = WorkflowBuilder("crash-ten").input("fail_step", "integer")
    for n in range(1, STEPS + 1):
        builder.step(f"s{n}", "crash.effect", step=n)
    if runs.get(run_id) is None:
        engine.start(builder.build(), {"fail_step": fail_step}, "agent", run_id=run_id)
    else:
        engine.recover()
    view = engine.view(run_id)
    sys.stdout.write(view.state.value + "\n")
    runtime.close()
    database.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
