"""A/B of the gateway path in one run: ``aifr mcp`` from another revision vs this checkout.

Both ``aifr mcp`` servers (audit NORMAL, each on a project of its own) and the bare
relay on aifr's stdio stay open and are called in alternating rounds, so a busy host
slows them alike. The other revision's ``src`` is exported with ``git archive`` and put
first on ``PYTHONPATH``; the rest (dependencies, the relay) is this checkout's.

    python benchmarks/gateway_ab.py --base REV [--calls 150] [--rounds 6]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.gateway_bench import EVERYTHING, RELAY, _project, _round  # noqa: E402


async def _measure(
    base_src: Path, projects: tuple[Path, Path], calls: int, rounds: int
) -> dict[str, list[float]]:
    def launch(args: list[str], **kw: object) -> Client:
        params = StdioServerParameters(command=sys.executable, args=args, **kw)  # type: ignore[arg-type]
        return Client(params, mode="legacy")

    path = {"PATH": os.environ.get("PATH", "")}
    base, this = projects
    clients = {
        "relay-aifr-stdio": (launch([RELAY, "--aifr-stdio", str(EVERYTHING)]), "echo"),
        "aifr-normal base": (
            launch(
                ["-m", "aifr", "mcp", "-p", str(base)],
                cwd=str(base),
                env={**path, "PYTHONPATH": str(base_src)},
            ),
            "every.echo",
        ),
        "aifr-normal this": (
            launch(["-m", "aifr", "mcp", "-p", str(this)], cwd=str(this), env=path),
            "every.echo",
        ),
    }
    samples: dict[str, list[float]] = {side: [] for side in clients}
    async with contextlib.AsyncExitStack() as stack:
        for client, _tool in clients.values():
            await stack.enter_async_context(client)
        for client, tool in clients.values():
            await _round(client, tool, 20)
        for _ in range(rounds):
            for side, (client, tool) in clients.items():
                samples[side] += await _round(client, tool, calls)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the revision to compare with")
    parser.add_argument("--calls", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", args.base, "src"], check=True, capture_output=True
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(root / "base", filter="data")
        (root / "a").mkdir()
        (root / "b").mkdir()
        projects = (_project(root / "a", "NORMAL"), _project(root / "b", "NORMAL"))
        started = os.getloadavg()[0]
        samples = anyio.run(_measure, root / "base" / "src", projects, args.calls, args.rounds)
        ended = os.getloadavg()[0]
    print(f"load average (1 min) at start {started:.1f}, at end {ended:.1f}")
    medians = {side: statistics.median(times) for side, times in samples.items()}
    relay = medians["relay-aifr-stdio"]
    for side, median in medians.items():
        print(f"{side:>18}: median {median * 1e3:.3f} ms ({median / relay:.2f}x the relay)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
