"""The REST API: a governed no-op over HTTP vs the same no-op on a bare FastAPI route.

Both are separate uvicorn processes on 127.0.0.1 (one worker each), driven by one httpx
``AsyncClient`` with keep-alive and 16 concurrent callers, in alternating rounds so the
host's drift hits both alike. aifr's call is ``POST /v1/capabilities/bench.noop/invoke``
with a bearer token: the token lookup, the rate limit, input validation, the policy
decision, output validation and a durable audit record (SQLite, ``audit.synchronous``
as configured: FULL by default). The bare route returns ``{"ok": true}``.

Goals (issue 25): at most 1.2x the bare route's time per call, and at least 1,000
governed calls/s with 16 concurrent clients. A third server, the CPython floor on the
same route (``benchmarks.floor.LeanFloor.call()`` in a pool thread, at the same
``synchronous`` level), gives the goals restated against the floor. Results go to ``docs/benchmarks.md`` under
``## REST API``.

    python -m benchmarks api [--calls 2000] [--rounds 3] [--synchronous FULL|NORMAL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script too: ``benchmarks.goals`` must import
DOCS = ROOT / "docs" / "benchmarks.md"

from benchmarks import goals  # noqa: E402  # after the path insert above
from benchmarks.goals import Goal, Verdict  # noqa: E402

AIFR = str(Path(sys.executable).parent / "aifr")
CONCURRENCY = 16
RATIO = Goal("governed no-op over HTTP / a bare FastAPI route (issue 25)", 1.2)
RATE = Goal("governed calls/s at 16 clients / 1,000 calls/s (issue 25)", 1.0, at_least=True)

CAPABILITIES = '''
from aifr import capability


@capability("bench.noop", operation="READ", risk="LOW")
def noop() -> dict[str, bool]:
    """Do nothing."""
    return {"ok": True}
'''

BARE = """
import socket, sys
import uvicorn
from fastapi import FastAPI

app = FastAPI()


@app.post("/noop")
async def noop() -> dict[str, bool]:
    return {"ok": True}


sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(1024)
print(f"serving on http://127.0.0.1:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])
"""

# The CPython floor on the same transport (as benchmarks/mcp_bench.py's floor rows): the
# bare app's uvicorn settings, and a route whose handler does benchmarks.floor's minimal
# governed call (validate, look up a decision, a hash-chained 17-column audit record, one
# commit at the given ``synchronous`` level) in a one-thread pool: the same single hand-off
# off the loop that aifr's ``ainvoke`` makes for a sync handler (its whole pipeline runs in
# one handler-pool thread under the default ``sync_execution = "auto"``).
FLOOR = BARE.replace(
    "app = FastAPI()",
    """import asyncio, concurrent.futures, tempfile
from pathlib import Path

sys.path.insert(0, sys.argv[2])  # the repository, for benchmarks.floor
from benchmarks.floor import LeanFloor

home = Path(tempfile.mkdtemp(prefix="floor-", dir=sys.argv[3]))
floor = LeanFloor(home / "floor.db", sys.argv[1])
pool = concurrent.futures.ThreadPoolExecutor(1)
app = FastAPI()


@app.post("/floor")
async def floor_call() -> dict[str, bool]:
    return await asyncio.get_running_loop().run_in_executor(pool, floor.call)""",
)


def _project(root: Path, synchronous: str) -> tuple[Path, str]:
    from aifr.app import build_token_service
    from aifr.config import load_settings
    from aifr.config.project import init_project

    project = root / "bench"
    init_project(project)
    (project / "bench_caps.py").write_text(CAPABILITIES)
    config = project / "aifr.toml"
    text = config.read_text().replace(
        "capability_modules = []", 'capability_modules = ["bench_caps"]'
    )
    text += "\n[api]\nrate_per_s = 1000000000.0\nburst = 1000000000\n"
    config.write_text(text)
    os.environ["AIFR_AUDIT__SYNCHRONOUS"] = synchronous
    token, _ = build_token_service(load_settings(project)).create("bench")
    return project, token


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(argv: list[str], log: Path, cwd: Path) -> tuple[subprocess.Popen[bytes], str]:
    with log.open("w") as sink:
        process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=sink)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        for line in log.read_text(errors="replace").splitlines():
            if "serving on " in line:
                return process, line.split("serving on ", 1)[1].strip()
        time.sleep(0.02)
    process.kill()
    raise SystemExit(f"{argv[0]} did not start: {log.read_text()}")


async def _round(
    url: str, path: str, headers: dict[str, str], body: dict[str, object], calls: int
) -> float:
    """Calls per second for ``calls`` POSTs by 16 concurrent callers on one keep-alive pool."""
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as client:
        for _ in range(CONCURRENCY):  # warm the connections
            (await client.post(path, json=body)).raise_for_status()
        left = calls

        async def caller() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                response = await client.post(path, json=body)
                if response.status_code != 200:
                    raise SystemExit(f"{path}: {response.status_code} {response.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
        return calls / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aifr-api-bench-") as tmp:
        root = Path(tmp)
        project, token = _project(root, args.synchronous)
        aifr_proc, aifr_url = _start(
            [AIFR, "serve", "--port", "0", "-p", str(project)], root / "aifr.log", project
        )
        bare_proc, bare_url = _start([sys.executable, "-c", BARE], root / "bare.log", root)
        floor_proc, floor_url = _start(
            [sys.executable, "-c", FLOOR, args.synchronous, str(ROOT), str(root)],
            root / "floor.log",
            root,
        )
        procs = {"bare": bare_proc, "floor": floor_proc, "aifr": aifr_proc}
        urls = {"bare": bare_url, "floor": floor_url, "aifr": aifr_url}
        auth = {"Authorization": f"Bearer {token}"}
        requests: dict[str, tuple[str, dict[str, str], dict[str, object]]] = {
            "bare": ("/noop", {}, {}),
            "floor": ("/floor", {}, {}),
            "aifr": ("/v1/capabilities/bench.noop/invoke", auth, {"inputs": {}}),
        }
        rates: dict[str, list[float]] = {name: [] for name in procs}
        cpu = dict.fromkeys(procs, 0.0)
        served = dict.fromkeys(procs, 0)
        try:
            for turn in range(args.rounds):
                order = list(procs)
                for name in order if turn % 2 == 0 else order[::-1]:
                    before = _cpu_s(procs[name].pid)
                    path, headers, body = requests[name]
                    rates[name].append(
                        asyncio.run(_round(urls[name], path, headers, body, args.calls))
                    )
                    cpu[name] += _cpu_s(procs[name].pid) - before
                    served[name] += args.calls + CONCURRENCY
                print(
                    f"round {turn + 1}: "
                    + "  ".join(f"{name} {rates[name][-1]:.0f}/s" for name in procs),
                    flush=True,
                )
        finally:
            for process in procs.values():
                process.terminate()
                process.wait(timeout=10)
    bare, floor_rates, governed = rates["bare"], rates["floor"], rates["aifr"]
    best_floor = max(floor_rates)
    best_bare, best_aifr = max(bare), max(governed)
    ratio = best_bare / best_aifr  # time per call, aifr / bare
    cpu_ms = {name: 1000 * cpu[name] / max(1, served[name]) for name in cpu}
    print(
        "server CPU per call: "
        + ", ".join(f"{name} {cpu_ms[name]:.3f} ms" for name in cpu_ms)
        + f" (aifr {cpu_ms['aifr'] / max(cpu_ms['floor'], 1e-9):.2f}x the floor)",
        flush=True,
    )
    # The project rule: a goal a benchmark shows to be below the floor is restated against
    # the floor (same transport, same durability, same hand-off).
    vs_floor = Goal(
        "governed no-op over HTTP / the CPython floor on the same route (restated)", 1.2
    )
    vs_floor_cpu = Goal("server CPU per governed call / the floor's (restated)", 1.2)
    rate_vs_floor = Goal(
        "governed calls/s / what the floor reaches at 16 clients (restated 1,000/s)",
        1 / 1.2,
        at_least=True,
    )
    verdicts = [
        Verdict(f"{best_aifr:.0f} vs {best_bare:.0f} calls/s", ratio, RATIO),
        Verdict(f"{best_aifr:.0f} calls/s", best_aifr / 1000.0, RATE),
        Verdict(f"{best_aifr:.0f} vs {best_floor:.0f} calls/s", best_floor / best_aifr, vs_floor),
        Verdict(
            f"{cpu_ms['aifr']:.3f} vs {cpu_ms['floor']:.3f} ms",
            cpu_ms["aifr"] / max(cpu_ms["floor"], 1e-9),
            vs_floor_cpu,
        ),
        Verdict(
            f"{best_aifr:.0f} vs {best_floor:.0f} calls/s", best_aifr / best_floor, rate_vs_floor
        ),
    ]
    goals.print_verdicts(verdicts)

    def row(label: str, name: str) -> str:
        runs = ", ".join(f"{r:.0f}" for r in rates[name])
        return f"| {label} | {max(rates[name]):.0f} | {runs} | {cpu_ms[name]:.3f} ms |"

    lines = [
        "## REST API",
        "",
        f"`python -m benchmarks api --calls {args.calls} --rounds {args.rounds} "
        f"--synchronous {args.synchronous}` on {platform.node() or 'this host'} "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()}), {time.strftime('%Y-%m-%d')}. "
        "16 concurrent httpx callers on keep-alive connections; each side one uvicorn "
        "process on 127.0.0.1 (uvloop, httptools, no access log); rounds alternate; best "
        "round of each shown; server CPU per call is user + system over all rounds.",
        "",
        "| | calls/s (best) | all rounds | server CPU per call |",
        "|---|---:|---|---:|",
        row("bare FastAPI route (returns `{ok: true}`)", "bare"),
        row(
            f"CPython floor on the same route (`LeanFloor.call()` in a pool thread, "
            f"{args.synchronous})",
            "floor",
        ),
        row("aifr governed no-op (`POST /v1/capabilities/{id}/invoke`)", "aifr"),
        "",
        *goals.verdict_table(verdicts),
        "",
        "The governed call does the token check and rate-limit lease in the state "
        "database (one round trip per lease of tokens, not per call), the policy "
        "decision, input and output validation and a durable audit append per call, in "
        "one hand-off to a handler thread; the bare route does none of it. The guard "
        "in front of aifr's routes answers a well-formed invoke itself once the token, "
        "rate and body size are checked (`DirectInvoke`), without FastAPI's routing and "
        "dependency solving, which took 0.12 of the API layer's 0.15 ms of CPU per call "
        "(the ASGI app driven in-process with the governed call stubbed out); the API "
        "layer now costs what the bare route costs (0.03 ms in-process), and the rest of "
        "aifr's CPU per call is the governed pipeline and its hand-off. The floor "
        "route does `benchmarks/floor.py`'s minimum of a governed call (input and output "
        "validation, a decision looked up in a dict, a hash-chained 17-column audit "
        "record, one commit at the same `synchronous` level) in the same single hand-off "
        "to a pool thread, and no token check, rate limit, policy engine or request "
        "context: what any CPython implementation on this stack pays. Server CPU per call is the CPU time each server process used over all its "
        "calls: on a shared host it moves far less than the calls/s, which also carry "
        "the client's cost (on the same CPUs) and the scheduling delays of every hand-off.",
        "",
    ]
    section = "\n".join(lines)
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\n"
    start = text.find("## REST API\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + ("\n" + text[end + 1 :] if end != -1 else "")
    DOCS.write_text(text)
    print(f"wrote {DOCS.relative_to(ROOT)} ## REST API", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
