"""The MCP gateway: a cheap upstream tool called directly vs through ``aifr mcp``, one run.

The upstream is ``@modelcontextprotocol/server-everything`` (``make mcp-servers``) and
its ``echo`` tool. *Direct* is the SDK client launching the server over stdio; *through
aifr* is the same client launching ``aifr mcp``, which serves ``every.echo`` and calls
the upstream over its own stdio connection, after validation, the policy decision and a
durable audit record (``[audit] synchronous`` at its default, FULL; ``AIFR_*`` variables
are passed on, so ``AIFR_AUDIT__SYNCHRONOUS=NORMAL`` measures without the fsync). Both sessions stay
open and are called in alternating rounds, so a busy host slows both alike; the ratio
of the medians is the number.

A gateway is a second hop by nature, so the same run also measures the floor of any
gateway: *relay*, a bare MCP SDK server that forwards the call to the same upstream with
no governance (``benchmarks/gateway_relay.py``, SDK stdio), and *relay-aifr-stdio*, the
same relay on the stdio streams ``aifr mcp`` uses. The goal is read against direct and
against the relay: what aifr adds over a bare second hop is its governance.

    python -m benchmarks gateway [--calls 300] [--rounds 6]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script too: ``benchmarks.goals`` must import

from benchmarks import goals  # noqa: E402  # after the path insert above
from benchmarks.goals import Goal, Verdict  # noqa: E402

AIFR = str(Path(sys.executable).parent / "aifr")
EVERYTHING = ROOT / ".tools" / "node_modules" / ".bin" / "mcp-server-everything"
_ENV = {
    k: v for k, v in os.environ.items() if k.startswith("AIFR_")
}  # e.g. AIFR_AUDIT__SYNCHRONOUS
RELAY = str(Path(__file__).resolve().parent / "gateway_relay.py")
GATEWAY = Goal("gateway round trip at the defaults / the upstream called directly", 1.2)
OVER_RELAY = Goal("gateway round trip at the defaults / a bare relay (SDK stdio)", 1.2)

POLICY = """\
version: 1
rules:
  - id: allow-echo
    when: {capability: "every.echo"}
    decision: ALLOW
"""


def _project(root: Path) -> Path:
    project = root / "gw"
    subprocess.run([AIFR, "init", str(project)], check=True, capture_output=True)
    (project / "policies" / "default.yaml").write_text(POLICY)
    config = project / "aifr.toml"
    config.write_text(
        config.read_text()
        + f"""
[mcp]
principal = "bench"

[[mcp.upstreams]]
name = "every"
command = {json.dumps([str(EVERYTHING)])}
expose = ["echo"]
[[mcp.upstreams.risk]]
tools = "echo"
operation = "READ"
"""
    )
    return project


async def _round(client: Client, tool: str, calls: int) -> list[float]:
    times = []
    for i in range(calls):
        started = time.perf_counter()
        result = await client.call_tool(tool, {"message": f"m{i}"})
        times.append(time.perf_counter() - started)
        if result.is_error:
            raise RuntimeError(f"{tool} failed: {result.content}")
    return times


async def _measure(project: Path, calls: int, rounds: int) -> dict[str, list[float]]:
    def launch(command: str, args: list[str], **kw: Any) -> Client:
        return Client(StdioServerParameters(command=command, args=args, **kw), mode="legacy")

    clients = {
        "direct": (launch(str(EVERYTHING), []), "echo"),
        "relay": (launch(sys.executable, [RELAY, str(EVERYTHING)]), "echo"),
        "relay-aifr-stdio": (
            launch(sys.executable, [RELAY, "--aifr-stdio", str(EVERYTHING)]),
            "echo",
        ),
        "aifr": (
            launch(AIFR, ["mcp", "-p", str(project)], cwd=str(project), env=_ENV),
            "every.echo",
        ),
    }
    samples: dict[str, list[float]] = {side: [] for side in clients}
    async with contextlib.AsyncExitStack() as stack:
        for client, _tool in clients.values():
            await stack.enter_async_context(client)
        for client, tool in clients.values():
            await _round(client, tool, 20)  # warm every side
        for _ in range(rounds):
            for side, (client, tool) in clients.items():
                samples[side] += await _round(client, tool, calls)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per round and side")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds")
    args = parser.parse_args()
    if not EVERYTHING.exists():
        print("server-everything is not installed: run `make mcp-servers`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        project = _project(Path(tmp))
        samples = anyio.run(_measure, project, args.calls, args.rounds)
    rows = {}
    for side, times in samples.items():
        ordered = sorted(times)
        rows[side] = (statistics.median(ordered), ordered[int(len(ordered) * 0.9)])
        print(f"{side:>16}: median {rows[side][0] * 1e3:.3f} ms, p90 {rows[side][1] * 1e3:.3f} ms")
    ratio = rows["aifr"][0] / rows["direct"][0]
    floor = rows["relay"][0] / rows["direct"][0]
    over = rows["aifr"][0] / rows["relay"][0]
    over_same = rows["aifr"][0] / rows["relay-aifr-stdio"][0]
    print(f"ratio (median, aifr / direct): {ratio:.2f}x")
    print(f"floor (median, bare relay / direct): {floor:.2f}x")
    print(f"ratio (median, aifr / bare relay): {over:.2f}x")
    print(f"ratio (median, aifr / relay on aifr's stdio): {over_same:.2f}x")
    goals.print_verdicts(
        [
            Verdict("gateway echo round trip", ratio, GATEWAY),
            Verdict("gateway echo over a bare relay", over, OVER_RELAY),
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
