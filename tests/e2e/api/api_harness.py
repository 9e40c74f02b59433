"""Harness for the REST API end-to-end tests: a governed project and ``aifr serve`` processes.

Each server is a real ``aifr serve`` subprocess (uvicorn on 127.0.0.1, a free port),
reached with httpx; tokens are minted with ``aifr tokens create`` as a user would.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

WEBHOOK_SECRET = "callback-secret-for-tests"  # the signed callback's secret in these tests

CAPABILITIES = '''
"""Capabilities of the API end-to-end project."""

from pathlib import Path

from aifr import capability

EFFECTS = Path(__file__).with_name("effects.log")


@capability("shop.noop", operation="READ", risk="LOW")
def noop() -> dict[str, bool]:
    """Do nothing."""
    return {"ok": True}


@capability("shop.greet", operation="READ", risk="LOW")
def greet(name: str) -> dict[str, str]:
    """Greet a customer.

    Args:
        name: Who to greet.
    """
    return {"greeting": f"Hello, {name}!"}


@capability("shop.orders.cancel", operation="WRITE", risk="MEDIUM")
def cancel(order_id: int) -> dict[str, int]:
    """Cancel an order.

    Args:
        order_id: The order.
    """
    return {"cancelled": order_id}


@capability("shop.wire", operation="WRITE", risk="HIGH")
def wire(amount: float) -> dict[str, float]:
    """Wire money out.

    Args:
        amount: How much.
    """
    return {"wired": amount}


@capability("shop.refund", operation="WRITE", risk="HIGH")
def refund(order_id: int, amount: float) -> dict[str, float]:
    """Refund an order.

    Args:
        order_id: The order.
        amount: How much.
    """
    with EFFECTS.open("a") as log:
        log.write(f"refund {order_id} {amount}\\n")
    return {"order_id": order_id, "refunded": amount}
'''

POLICY = """\
version: 1
roles:
  approver:
    principals: [alice, carol]
  security:
    principals: [sam]
rules:
  - id: no-audit-for-outsiders
    when:
      capability: "api.audit.*"
      principal: "outsider"
    decision: DENY
    reason: outsiders do not read the audit trail
  - id: no-cancel-by-agents
    when:
      capability: "shop.orders.cancel"
    decision: DENY
    reason: orders are cancelled by people, not agents
  - id: refunds-need-a-human
    when:
      capability: "shop.refund"
    decision: REQUIRE_APPROVAL
    reason: refunds move money
    approvers: [approver]
  - id: wires-need-two-duties
    when:
      capability: "shop.wire"
    decision: REQUIRE_APPROVAL
    reason: money leaves the company
    quorum_roles: {approver: 1, security: 1}
  - id: allow-reads
    when:
      operation: READ
    decision: ALLOW
    reason: reading is low risk
approvals:
  - risk: HIGH
    roles: [approver, security]
"""

WELCOME_WORKFLOW = """\
name: welcome
description: Greet a customer twice.
inputs:
  name: {type: string}
steps:
  - id: first
    capability: shop.greet
    inputs: {name: "{{ inputs.name }}"}
  - id: second
    capability: shop.greet
    inputs: {name: "{{ steps.first.output.greeting }}"}
"""

READY_TIMEOUT_S = 30.0


def run_aifr(
    aifr_bin: str, *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run one ``aifr`` command with pipes (no terminal)."""
    return subprocess.run(
        [aifr_bin, *args],
        cwd=cwd,
        env={**env, "COLUMNS": "40"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def make_project(aifr_bin: str, root: Path, env: dict[str, str], *, extra_toml: str = "") -> Path:
    """``aifr init`` plus the capability module, policy and workflow above."""
    project = root / "shop"
    result = run_aifr(aifr_bin, "init", str(project), cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    (project / "api_caps.py").write_text(CAPABILITIES)
    (project / "policies" / "default.yaml").write_text(POLICY)
    (project / "workflows" / "welcome.yaml").write_text(WELCOME_WORKFLOW)
    config = project / "aifr.toml"
    text = config.read_text().replace(
        "capability_modules = []", 'capability_modules = ["api_caps"]'
    )
    config.write_text(text + extra_toml)
    return project


def mint(aifr_bin: str, project: Path, env: dict[str, str], principal: str, *extra: str) -> str:
    """A new token for ``principal`` (``aifr tokens create``)."""
    result = run_aifr(
        aifr_bin,
        "tokens",
        "create",
        "--principal",
        principal,
        *extra,
        "-p",
        str(project),
        cwd=project,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@dataclass
class Server:
    """A running ``aifr serve`` and what reaches it."""

    process: subprocess.Popen[str]
    log: Path
    url: str = ""
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self, who: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(aifr_bin: str, project: Path, env: dict[str, str], *args: str) -> Server:
    """Start ``aifr serve --port 0`` and wait until it says where it listens."""
    log = project / f".serve-{len(list(project.glob('.serve-*')))}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [aifr_bin, "serve", "--port", "0", "-p", str(project), *args],
            cwd=project,
            env={**env, "COLUMNS": "200"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            text=True,
        )
    server = Server(process, log)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        for line in server.stderr.splitlines():
            if "serving on " in line:
                server.url = line.split("serving on ", 1)[1].strip()
                return server
        time.sleep(0.02)  # polling the log for a condition, bounded by the deadline
    server.stop()
    raise AssertionError(f"aifr serve never said where it listens; stderr: {server.stderr}")
