"""Harness for the MCP end-to-end tests: a governed project and ``aifr mcp`` servers.

Every test gets its own project (``aifr init`` in tmp_path) with a capability module
and a policy file, and talks to a real ``aifr mcp`` subprocess through the MCP SDK's
own client.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from aifr.transports.mcp.uds import unix_client

CAPABILITIES = '''
"""Capabilities of the MCP end-to-end project."""

from pathlib import Path
from typing import Annotated

from pydantic import Field

from aifr import capability

EFFECTS = Path(__file__).with_name("effects.log")


@capability("shop.greet", operation="READ", risk="LOW", tags=["shop"])
def greet(
    name: Annotated[str, Field(min_length=1, max_length=40)],
    times: Annotated[int, Field(ge=1, le=3)] = 1,
) -> dict[str, str]:
    """Greet a customer.

    Args:
        name: Who to greet.
        times: How many times.
    """
    return {"greeting": " ".join([f"Hello, {name}!"] * times)}


@capability("shop.count", operation="READ", risk="LOW")
def count(text: str) -> int:
    """Count characters.

    Args:
        text: What to count.
    """
    return len(text)


@capability("shop.orders.cancel", operation="WRITE", risk="MEDIUM", tags=["shop"])
def cancel(order_id: int) -> dict[str, int]:
    """Cancel an order.

    Args:
        order_id: The order.
    """
    with EFFECTS.open("a") as log:
        log.write(f"cancel {order_id}\\n")
    return {"cancelled": order_id}


@capability("shop.refund", operation="WRITE", risk="HIGH", tags=["shop"])
def refund(order_id: int, amount: Annotated[float, Field(gt=0)]) -> dict[str, float]:
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
    principals: [alice]
rules:
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
  - id: allow-reads
    when:
      operation: READ
    decision: ALLOW
    reason: reading is low risk
approvals:
  - risk: HIGH
    roles: [approver]
"""

WELCOME_WORKFLOW = """\
name: welcome
version: "1"
description: Greet a customer, then count the greeting.
inputs:
  name: {type: string, description: Who to greet}
steps:
  - id: greet
    capability: shop.greet
    inputs: {name: "{{ inputs.name }}", times: 2}
  - id: count
    capability: shop.count
    inputs: {text: "{{ steps.greet.output.greeting }}"}
"""

REFUND_WORKFLOW = """\
name: goodwill
description: Greet, then refund (a human approves the refund).
inputs:
  order: {type: integer}
steps:
  - id: greet
    capability: shop.greet
    inputs: {name: "customer"}
  - id: refund
    capability: shop.refund
    inputs: {order_id: "{{ inputs.order }}", amount: 5}
"""

READY_TIMEOUT_S = 30.0


def run_aifr(
    aifr_bin: str, *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [aifr_bin, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def make_project(aifr_bin: str, root: Path, env: dict[str, str], *, operator: str | None) -> Path:
    project = root / "shop"
    result = run_aifr(aifr_bin, "init", str(project), cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    (project / "mcp_caps.py").write_text(CAPABILITIES)
    (project / "policies" / "default.yaml").write_text(POLICY)
    (project / "workflows" / "welcome.yaml").write_text(WELCOME_WORKFLOW)
    (project / "workflows" / "goodwill.yaml").write_text(REFUND_WORKFLOW)
    config = project / "aifr.toml"
    text = config.read_text().replace(
        "capability_modules = []", 'capability_modules = ["mcp_caps"]'
    )
    text += '\n[mcp]\nprincipal = "agent"\nlist_tools = "all"\n'
    if operator is not None:
        text += f'operator = "{operator}"\n'
    config.write_text(text)
    return project


class ServerProcess:
    """An ``aifr mcp`` subprocess whose stderr goes to a log file the test can read."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.log = cwd / f".mcp-server-{len(list(cwd.glob('.mcp-server-*')))}.log"
        with self.log.open("w") as sink:
            self.process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, marker: str, timeout: float = READY_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            for line in self.stderr.splitlines():
                if marker in line:
                    return line
            time.sleep(0.02)  # polling the log file for a condition, bounded by the deadline
        raise AssertionError(f"server never printed {marker!r}; stderr: {self.stderr}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass
class McpTarget:
    """How to reach one running ``aifr mcp`` (or how to launch it, for stdio)."""

    transport: str
    project: Path
    aifr_bin: str
    env: dict[str, str]
    url: str | None = None
    token: str | None = None
    socket: Path | None = None
    servers: list[ServerProcess] = field(default_factory=list)

    def stdio_params(self) -> StdioServerParameters:
        return StdioServerParameters(
            command=self.aifr_bin,
            args=["mcp", "--transport", "stdio", "-p", str(self.project)],
            env=self.env,
            cwd=self.project,
        )

    @asynccontextmanager
    async def client(self, **options: Any) -> AsyncIterator[Client]:
        if self.transport == "stdio":
            async with Client(self.stdio_params(), **options) as client:
                yield client
        elif self.transport == "http":
            assert self.url is not None and self.token is not None
            headers = {"Authorization": f"Bearer {self.token}"}
            async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
                async with Client(
                    streamable_http_client(self.url, http_client=http), **options
                ) as client:
                    yield client
        else:
            assert self.socket is not None
            async with Client(unix_client(self.socket), **options) as client:
                yield client


def mint_token(target: McpTarget, principal: str, *extra: str) -> str:
    result = run_aifr(
        target.aifr_bin,
        "mcp",
        "token",
        "create",
        "--principal",
        principal,
        *extra,
        "-p",
        str(target.project),
        cwd=target.project,
        env=target.env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def start(target: McpTarget) -> McpTarget:
    """Start the server for HTTP or UDS targets (stdio is launched per client)."""
    argv = [target.aifr_bin, "mcp", "--transport", target.transport, "-p", str(target.project)]
    if target.transport == "http":
        target.token = mint_token(target, "agent", "--operator", "alice")
        server = ServerProcess([*argv, "--port", "0"], target.project, target.env)
        target.servers.append(server)
        line = server.wait_for("serving on")
        target.url = line.rsplit("serving on", 1)[1].strip()
    elif target.transport == "uds":
        assert target.socket is not None
        server = ServerProcess([*argv, "--socket", str(target.socket)], target.project, target.env)
        target.servers.append(server)
        server.wait_for("serving on")
    return target


def build_target(
    transport: str,
    aifr_bin: str,
    tmp_path: Path,
    env: dict[str, str],
    socket_dir: Path,
    *,
    operator: str | None = "alice",
) -> McpTarget:
    project = make_project(aifr_bin, tmp_path, env, operator=operator)
    return McpTarget(
        transport=transport,
        project=project,
        aifr_bin=aifr_bin,
        env=env,
        socket=socket_dir / "mcp.sock",
    )
