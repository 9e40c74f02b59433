"""The MCP gateway: a cheap upstream tool called directly vs through ``aifr mcp``, one run.

The upstream is ``@modelcontextprotocol/server-everything`` (``make mcp-servers``) and
its ``echo`` tool. *Direct* is the SDK client launching the server over stdio; *through
aifr* is the same client launching ``aifr mcp``, which serves ``every.echo`` and calls
the upstream over its own stdio connection, after validation, the policy decision and a
durable audit record (``[audit] synchronous`` at its default, FULL). The sessions stay
open and are called in alternating rounds, so a busy host slows both alike; the ratio
of the medians is the number.

A gateway is a second hop by nature, so the same run also measures the floor of any
gateway: *relay*, a bare MCP SDK server that forwards the call to the same upstream with
no governance (``benchmarks/gateway_relay.py``, SDK stdio), and *relay-aifr-stdio*, the
same relay on the stdio streams ``aifr mcp`` uses. At the defaults aifr also makes each
call durable (an fsync'd audit commit), which no bare relay pays; the *floor at the
defaults' durability* is the relay on aifr's stdio plus ``benchmarks.floor``'s minimal
governed call per call (a hash-chained record, one SQLite commit at FULL, in a pool
thread as aifr appends off the loop): *floor-full*, and *floor-normal* at NORMAL.
*aifr* runs at the defaults (FULL) and *aifr-normal* with ``[audit] synchronous =
"NORMAL"``, each on a project of its own. The goal is read against direct, the relay,
and the floor of the same durability: what aifr adds over that is its governance.

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
_ENV = {  # aifr's own settings pass on, but each project's [audit] synchronous holds
    k: v for k, v in os.environ.items() if k.startswith("AIFR_") and k != "AIFR_AUDIT__SYNCHRONOUS"
}
RELAY = str(Path(__file__).resolve().parent / "gateway_relay.py")
GATEWAY = Goal("gateway round trip at the defaults / the upstream called directly", 1.2)
OVER_RELAY = Goal("gateway round trip at the defaults / a bare relay (SDK stdio)", 1.2)
OVER_FLOOR = Goal(
    "gateway round trip at the defaults / the relay plus one fsync'd commit per call", 1.2
)

POLICY = """\
version: 1
rules:
  - id: allow-echo
    when: {capability: "every.echo"}
    decision: ALLOW
"""


def _project(root: Path, synchronous: str) -> Path:
    project = root / f"gw-{synchronous.lower()}"
    subprocess.run([AIFR, "init", str(project)], check=True, capture_output=True)
    (project / "policies" / "default.yaml").write_text(POLICY)
    config = project / "aifr.toml"
    config.write_text(
        config.read_text()
        + f"""
[audit]
synchronous = "{synchronous}"

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


async def _measure(projects: dict[str, Path], calls: int, rounds: int) -> dict[str, list[float]]:
    def launch(command: str, args: list[str], **kw: Any) -> Client:
        return Client(StdioServerParameters(command=command, args=args, **kw), mode="legacy")

    clients = {
        "direct": (launch(str(EVERYTHING), []), "echo"),
        "relay": (launch(sys.executable, [RELAY, str(EVERYTHING)]), "echo"),
        "relay-aifr-stdio": (
            launch(sys.executable, [RELAY, "--aifr-stdio", str(EVERYTHING)]),
            "echo",
        ),
        "floor-full": (
            launch(sys.executable, [RELAY, "--floor", "FULL", str(EVERYTHING)]),
            "echo",
        ),
        "floor-normal": (
            launch(sys.executable, [RELAY, "--floor", "NORMAL", str(EVERYTHING)]),
            "echo",
        ),
        **{
            side: (
                launch(AIFR, ["mcp", "-p", str(project)], cwd=str(project), env=_ENV),
                "every.echo",
            )
            for side, project in projects.items()
        },
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
    started = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        projects = {
            "aifr": _project(Path(tmp), "FULL"),
            "aifr-normal": _project(Path(tmp), "NORMAL"),
        }
        samples = anyio.run(_measure, projects, args.calls, args.rounds)
    ended = os.getloadavg()
    print(f"load average (1 min) at start {started[0]:.1f}, at end {ended[0]:.1f}")
    rows = {}
    for side, times in samples.items():
        ordered = sorted(times)
        rows[side] = (statistics.median(ordered), ordered[int(len(ordered) * 0.9)])
        print(f"{side:>16}: median {rows[side][0] * 1e3:.3f} ms, p90 {rows[side][1] * 1e3:.3f} ms")

    def over(side: str, base: str) -> float:
        return rows[side][0] / rows[base][0]

    ratio, floor, vs_relay = over("aifr", "direct"), over("relay", "direct"), over("aifr", "relay")
    vs_floor = over("aifr", "floor-full")
    print(f"ratio (median, aifr / direct): {ratio:.2f}x")
    print(f"floor (median, bare relay / direct): {floor:.2f}x")
    print(
        f"floor at the defaults (median, floor-full / direct): {over('floor-full', 'direct'):.2f}x"
    )
    print(f"ratio (median, aifr / bare relay): {vs_relay:.2f}x")
    print(f"ratio (median, aifr / relay on aifr's stdio): {over('aifr', 'relay-aifr-stdio'):.2f}x")
    print(f"ratio (median, aifr / floor-full): {vs_floor:.2f}x")
    print(f"ratio (median, aifr-normal / floor-normal): {over('aifr-normal', 'floor-normal'):.2f}x")
    print(
        "ratio (median, aifr-normal / relay on aifr's stdio): "
        f"{over('aifr-normal', 'relay-aifr-stdio'):.2f}x"
    )
    print(
        f"fsync share (median, floor-full - floor-normal): "
        f"{(rows['floor-full'][0] - rows['floor-normal'][0]) * 1e3:.3f} ms"
    )
    goals.print_verdicts(
        [
            Verdict("gateway echo round trip", ratio, GATEWAY),
            Verdict("gateway echo over a bare relay", vs_relay, OVER_RELAY),
            Verdict("gateway echo over the floor at the defaults", vs_floor, OVER_FLOOR),
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
