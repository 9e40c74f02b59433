"""A real governed runtime over a fresh SQLite state database: the tests' capabilities and policy."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aifr.audit import AuditLedger
from aifr.capabilities import CallInfo, Capability, CapabilityRegistry, capability
from aifr.invocation import (
    ApprovalService,
    EnvSecretProvider,
    FileSecretProvider,
    KeyringSecretProvider,
    Runtime,
    SecretResolver,
    SyncExecution,
    current_request,
)
from aifr.policy import PolicyEngine, load_policy_text
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.approvals import SqliteApprovalStore
from aifr.storage.sqlite.audit import SqliteAuditStore
from aifr.storage.sqlite.circuits import SqliteCircuitStore
from aifr.storage.sqlite.idempotency import SqliteIdempotencyStore

POLICY = """
version: 1
default: DENY
roles:
  approver:
    principals: [bob, carol, dave]
rules:
  - id: forbid
    when: {capability: "demo.forbidden"}
    decision: DENY
    reason: nobody may do this
  - id: transfers-need-approval
    when: {capability: "demo.transfer"}
    decision: REQUIRE_APPROVAL
    reason: money moves
    approvers: [approver]
  - id: pair-approval
    when: {capability: "demo.wire"}
    decision: REQUIRE_APPROVAL
    reason: two people sign wires
    approvers: [approver]
    quorum: 2
  - id: allow-demo
    when: {capability: "demo.*"}
    decision: ALLOW
    reason: demo capabilities are fine
rate_limits:
  - name: one-limited-call
    when: {capability: "demo.limited"}
    limit: 1
    per_s: 3600
secrets:
  - names: ["*_TOKEN", MISSING]
    when: {capability: [demo.use_token, demo.transfer], principal: alice}
"""


def policy_engine(text: str = POLICY) -> PolicyEngine:
    """The policy engine for ``text`` (one policy file)."""
    return PolicyEngine(load_policy_text([("policies/test.yaml", text)]))


@dataclass
class Calls:
    """What the test capabilities observed."""

    transfers: list[dict[str, Any]] = field(default_factory=list)
    counted: list[str] = field(default_factory=list)
    seen_tokens: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    fail_next: list[bool] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)


def demo_capabilities(calls: Calls) -> list[Capability]:
    """Every test capability, bound to ``calls``."""
    return [*_well_behaved(calls), *_troublesome(calls)]


def _well_behaved(calls: Calls) -> list[Capability]:
    @capability("demo.echo", operation="READ", risk="LOW")
    def echo(text: str, times: int = 1) -> dict[str, str]:
        """Echo text back."""
        return {"text": text * times}

    @capability("demo.echo", operation="READ", risk="LOW", version="2")
    def echo_v2(text: str) -> dict[str, str]:
        """Echo text back, v2."""
        return {"text": text, "version": "2"}

    @capability("demo.count", operation="WRITE", risk="MEDIUM")
    def count(label: str, info: CallInfo) -> dict[str, str]:
        """Count a call."""
        with calls.lock:
            calls.counted.append(label)
        return {"label": label, "request_id": info.request_id}

    @capability("demo.transfer", operation="WRITE", risk="MEDIUM")
    def transfer(to: str, amount: int) -> dict[str, Any]:
        """Move money."""
        with calls.lock:
            calls.transfers.append({"to": to, "amount": amount})
        return {"sent": amount, "to": to}

    @capability("demo.wire", operation="WRITE", risk="MEDIUM")
    def wire(amount: int) -> dict[str, int]:
        """Wire money (two approvers)."""
        return {"wired": amount}

    @capability("demo.forbidden", operation="READ", risk="LOW")
    def forbidden() -> None:
        """Never allowed."""

    @capability("demo.aecho", operation="READ", risk="LOW")
    async def aecho(text: str) -> dict[str, str]:
        """Async echo."""
        return {"text": text}

    @capability("demo.whoami", operation="READ", risk="LOW")
    def whoami() -> dict[str, str | None]:
        """The current request as the handler sees it."""
        calls.threads.append(threading.get_ident())
        context = current_request()
        return {"principal": context.principal if context else None}

    @capability("demo.awhoami", operation="READ", risk="LOW")
    async def awhoami() -> dict[str, str | None]:
        """The current request as an async handler sees it."""
        context = current_request()
        return {"principal": context.principal if context else None}

    @capability("demo.limited", operation="READ", risk="LOW")
    def limited() -> dict[str, bool]:
        """Allowed once an hour by the policy's rate limit."""
        return {"ok": True}

    return [echo, echo_v2, count, transfer, wire, forbidden, aecho, whoami, awhoami, limited]


def _troublesome(calls: Calls) -> list[Capability]:
    @capability("demo.boom", operation="READ", risk="LOW")
    def boom(message: str = "kaput") -> None:
        """Always raises."""
        raise RuntimeError(message)

    @capability("demo.flaky", operation="READ", risk="LOW")
    def flaky() -> dict[str, bool]:
        """Fails while fail_next holds True values."""
        if calls.fail_next and calls.fail_next.pop(0):
            raise ConnectionError("upstream down")
        return {"ok": True}

    @capability("demo.slow", operation="READ", risk="LOW", timeout_s=0.1)
    def slow() -> None:
        """Waits for the test to release it."""
        calls.release.wait(10)

    @capability("demo.aslow", operation="READ", risk="LOW", timeout_s=0.1)
    async def aslow() -> None:
        """Async, never finishes in time."""
        import asyncio

        await asyncio.Event().wait()

    @capability("demo.dawdle", operation="READ", risk="LOW", timeout_s=0.05)
    def dawdle() -> dict[str, bool]:
        """Finishes, but only after its timeout."""
        threading.Event().wait(0.2)
        return {"late": True}

    @capability("demo.bad_output", operation="READ", risk="LOW")
    def bad_output() -> dict[str, int]:
        """Returns the wrong type."""
        return {"n": "not a number"}  # type: ignore[dict-item]

    @capability("demo.use_token", operation="NETWORK", risk="MEDIUM")
    def use_token(token: str, mode: str = "echo") -> dict[str, str]:
        """Uses a secret token."""
        calls.seen_tokens.append(token)
        if mode == "raise":
            raise PermissionError(f"token {token} was refused by upstream")
        if mode == "aifr":
            from aifr.errors import ExecutionError

            raise ExecutionError(f"upstream said no to {token}", token=token)
        return {"echo": f"used {token}"}

    return [boom, flaky, slow, aslow, dawdle, bad_output, use_token]


@dataclass
class Env:
    """A governed runtime and everything it writes to."""

    path: Path
    database: SqliteDatabase
    ledger: AuditLedger
    runtime: Runtime
    approvals: ApprovalService
    calls: Calls
    clock: list[float]

    def audit_rows(self) -> list[dict[str, Any]]:
        """Every audit record in chain order, flat (event fields at top level)."""
        return [record.to_dict() for record in self.ledger.records()]


def build_env(
    tmp_path: Path,
    *,
    environ: dict[str, str] | None = None,
    threshold: int = 3,
    cooldown_s: float = 60.0,
    synchronous: Literal["FULL", "NORMAL", "OFF"] = "NORMAL",
    sync_execution: SyncExecution = "thread",
    keyring_service: str | None = None,
) -> Env:
    """A runtime with every store on one SQLite file in ``tmp_path``."""
    calls = Calls()
    database = SqliteDatabase(tmp_path / "state.db", synchronous=synchronous)
    ledger = AuditLedger(SqliteAuditStore(database))
    registry = CapabilityRegistry(demo_capabilities(calls))
    policy = policy_engine()
    clock = [time.time()]
    approvals = ApprovalService(
        SqliteApprovalStore(database, ledger), policy, default_ttl_s=600, clock=lambda: clock[0]
    )
    (tmp_path / "secrets").mkdir(exist_ok=True)
    runtime = Runtime(
        registry,
        policy,
        ledger,
        approvals=approvals,
        idempotency=SqliteIdempotencyStore(database, ledger),
        circuit_store=SqliteCircuitStore(database),
        secrets=SecretResolver(
            [
                EnvSecretProvider(environ or {}),
                FileSecretProvider(tmp_path / "secrets"),
                *([KeyringSecretProvider(keyring_service)] if keyring_service else []),
            ]
        ),
        circuit_failure_threshold=threshold,
        circuit_cooldown_s=cooldown_s,
        default_timeout_s=5,
        sync_execution=sync_execution,
    )
    return Env(tmp_path, database, ledger, runtime, approvals, calls, clock)
