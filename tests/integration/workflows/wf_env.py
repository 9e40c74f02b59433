"""A real workflow engine over a fresh state database (SQLite or PostgreSQL), with file capabilities.

The capabilities change real files under ``root`` and keep what they did in
``Effects`` so tests can check each effect happened once and undos ran in reverse.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aifr.audit import AuditLedger
from aifr.capabilities import CallInfo, Capability, CapabilityRegistry, capability
from aifr.invocation import ApprovalService, Runtime
from aifr.policy import PolicyEngine, load_policy_text
from aifr.storage.fenced_ledger import FencedLedger
from aifr.storage.postgres.approvals import PostgresApprovalStore
from aifr.storage.postgres.audit import PostgresAuditStore
from aifr.storage.postgres.database import PostgresDatabase
from aifr.storage.postgres.idempotency import PostgresIdempotencyStore
from aifr.storage.postgres.runs import PostgresRunStore
from aifr.storage.postgres.step_results import PostgresStepResultStore
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.approvals import SqliteApprovalStore
from aifr.storage.sqlite.audit import SqliteAuditStore
from aifr.storage.sqlite.idempotency import SqliteIdempotencyStore
from aifr.storage.sqlite.runs import SqliteRunStore
from aifr.storage.sqlite.step_results import StepResultStore
from aifr.workflows import DriftRule, WorkflowEngine

POLICY = """
version: 1
default: DENY
roles:
  approver:
    principals: [bob]
rules:
  - id: no-high-risk
    when: {risk: HIGH}
    decision: DENY
    reason: HIGH risk actions are not allowed for agents
  - id: deploy-needs-approval
    when: {capability: "ops.deploy"}
    decision: REQUIRE_APPROVAL
    reason: deployments need a human
    approvers: [approver]
  - id: allow-rest
    when: {capability: ["files.*", "ops.*", "test.*"]}
    decision: ALLOW
    reason: test capabilities
"""


@dataclass
class Effects:
    """What the capabilities did, in order, and what tests want them to do."""

    log: list[tuple[str, str]] = field(default_factory=list)
    keys: dict[str, Any] = field(default_factory=dict)
    fail_times: dict[str, int] = field(default_factory=dict)
    fail_undo: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, what: str, target: str) -> None:
        with self.lock:
            self.log.append((what, target))


def file_capabilities(effects: Effects) -> list[Capability]:
    """Write/restore/read files, a deploy that needs approval, a failure, a HIGH-risk wipe."""

    @capability(
        "files.write", operation="WRITE", risk="MEDIUM", compensation="files.restore",
        side_effect_scope="filesystem",
    )  # fmt: skip
    def write(path: str, content: str, info: CallInfo) -> dict[str, Any]:
        """Write a file; the undo restores what was there."""
        key = info.idempotency_key
        if key is not None and key in effects.keys:
            return effects.keys[key]
        target = Path(path)
        before = target.read_text() if target.exists() else None
        target.write_text(content)
        effects.record("write", path)
        output = {"path": path, "bytes": len(content), "undo": {"path": path, "content": before}}
        if key is not None:
            effects.keys[key] = output
        return output

    @capability("files.restore", operation="WRITE", risk="MEDIUM", side_effect_scope="filesystem")
    def restore(path: str, content: str | None = None) -> dict[str, Any]:
        """Put a file back as it was (delete it if it did not exist)."""
        if path in effects.fail_undo:
            raise OSError(f"disk refused to restore {path}")
        target = Path(path)
        if content is None:
            target.unlink(missing_ok=True)
        else:
            target.write_text(content)
        effects.record("restore", path)
        return {"path": path}

    return [write, restore, *_service_capabilities(effects)]


def _service_capabilities(effects: Effects) -> list[Capability]:
    @capability("files.read", operation="READ", risk="LOW")
    def read(path: str) -> dict[str, str]:
        """Read a file."""
        return {"content": Path(path).read_text()}

    @capability("ops.deploy", operation="WRITE", risk="MEDIUM", side_effect_scope="service")
    def deploy(service: str) -> dict[str, str]:
        """Deploy a service (irreversible by itself; policy wants an approval)."""
        effects.record("deploy", service)
        return {"deployed": service}

    @capability("ops.check", operation="READ", risk="LOW")
    def check(service: str, healthy: bool = True) -> dict[str, bool]:
        """A health check that fails on demand."""
        remaining = effects.fail_times.get(service, 0)
        if remaining:
            effects.fail_times[service] = remaining - 1
            raise ConnectionError(f"{service} health endpoint unreachable")
        if not healthy:
            raise RuntimeError(f"{service} is unhealthy")
        effects.record("check", service)
        return {"healthy": True}

    @capability("ops.wipe", operation="WRITE", risk="HIGH", side_effect_scope="filesystem")
    def wipe(path: str) -> dict[str, str]:
        """Erase a file's content (HIGH risk)."""
        effects.record("wipe", path)
        Path(path).write_text("")
        return {"path": path}

    @capability("test.noop", operation="READ", risk="LOW")
    def noop(n: int = 0) -> dict[str, int]:
        """Do nothing."""
        return {"n": n}

    return [read, deploy, check, wipe, noop]


@dataclass
class WfEnv:
    """An engine and everything it writes to."""

    root: Path
    database: SqliteDatabase | PostgresDatabase
    ledger: AuditLedger
    registry: CapabilityRegistry
    runtime: Runtime
    approvals: ApprovalService
    runs: SqliteRunStore | PostgresRunStore
    engine: WorkflowEngine
    effects: Effects
    clock: list[float]

    def kinds(self, run_id: str) -> list[str]:
        """Audit record kinds of one run, in chain order."""
        return [r.event.kind for r in self.ledger.records() if r.event.run_id == run_id]

    def new_engine(self, **options: Any) -> WorkflowEngine:
        """Another engine (a restarted worker) over the same database."""
        return WorkflowEngine(self.runtime, self.runs, **options)

    def close(self) -> None:
        self.runtime.close()
        if isinstance(self.database, PostgresDatabase):
            self.ledger.close()
        self.database.close()


def build_wf_env(
    tmp_path: Path,
    *,
    policy: str = POLICY,
    drift: DriftRule = "needs_review",
    webhook_url: str | None = None,
    registry: CapabilityRegistry | None = None,
    synchronous: Literal["FULL", "NORMAL"] = "NORMAL",
    postgres: tuple[str, str] | None = None,
) -> WfEnv:
    """A workflow engine with every store on one SQLite file in ``tmp_path``.

    ``postgres`` (a DSN and a schema) puts every store in PostgreSQL instead.
    """
    root = tmp_path / "files"
    root.mkdir(exist_ok=True)
    effects = Effects()
    if postgres is not None:
        return _build_pg_env(root, effects, postgres, policy, drift, webhook_url, registry)
    database = SqliteDatabase(tmp_path / "state.db", synchronous=synchronous)
    ledger = AuditLedger(SqliteAuditStore(database))
    registry = registry or CapabilityRegistry(file_capabilities(effects))
    engine_policy = PolicyEngine(load_policy_text([("policies/test.yaml", policy)]))
    clock = [time.time()]
    runs = SqliteRunStore(database, ledger)
    fenced = FencedLedger(ledger, runs)  # as the app wires it: leased runs' records fenced
    approvals = ApprovalService(
        SqliteApprovalStore(database, fenced), engine_policy, default_ttl_s=600,
        clock=lambda: clock[0],
    )  # fmt: skip
    runtime = Runtime(
        registry,
        engine_policy,
        fenced,
        approvals=approvals,
        idempotency=StepResultStore(runs, SqliteIdempotencyStore(database, ledger)),
        sync_execution="inline",
    )
    engine = WorkflowEngine(runtime, runs, on_fingerprint_drift=drift, webhook_url=webhook_url)
    return WfEnv(root, database, ledger, registry, runtime, approvals, runs, engine, effects, clock)


def _build_pg_env(
    root: Path,
    effects: Effects,
    postgres: tuple[str, str],
    policy: str,
    drift: DriftRule,
    webhook_url: str | None,
    registry: CapabilityRegistry | None,
) -> WfEnv:
    dsn, schema = postgres
    database = PostgresDatabase(dsn, schema=schema, max_size=8)
    ledger = AuditLedger(PostgresAuditStore(dsn, schema=schema))
    registry = registry or CapabilityRegistry(file_capabilities(effects))
    engine_policy = PolicyEngine(load_policy_text([("policies/test.yaml", policy)]))
    clock = [time.time()]
    runs = PostgresRunStore(database, ledger)
    fenced = FencedLedger(ledger, runs)  # as the app wires it: leased runs' records fenced
    approvals = ApprovalService(
        PostgresApprovalStore(database, fenced), engine_policy, default_ttl_s=600,
        clock=lambda: clock[0],
    )  # fmt: skip
    runtime = Runtime(
        registry,
        engine_policy,
        fenced,
        approvals=approvals,
        idempotency=PostgresStepResultStore(runs, PostgresIdempotencyStore(database, ledger)),
        sync_execution="inline",
    )
    engine = WorkflowEngine(runtime, runs, on_fingerprint_drift=drift, webhook_url=webhook_url)
    return WfEnv(root, database, ledger, registry, runtime, approvals, runs, engine, effects, clock)
