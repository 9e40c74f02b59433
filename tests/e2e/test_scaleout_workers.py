"""Scale-out under fire: 4 worker processes on one database, two of them killed with -9.

200 three-step workflows are queued; four ``aifr worker`` processes drive them; two are
killed at random moments and replaced. At the end every run completed, every step's
effect happened exactly once (effects are files created exclusively per idempotency
key, so a resumed attempt with a *different* key would show as a second effect), and
the audit chain, written by every worker at once, verifies.

On PostgreSQL, and on the SQLite file of one host, where the workers queue for the
write lock through the writer gate (``<database>-lock``): a worker killed while it
holds the gate must not stall the others (the kernel releases its lock with it).
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_kit import pg_rows, run_cli

from aifr.app import build_app

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

RUNS = 200
STEPS = ("s1", "s2", "s3")

CAPS = '''
import os
import time
from pathlib import Path

from aifr.capabilities import CallInfo, capability

HERE = Path(__file__).parent


@capability("chaos.effect", operation="WRITE", risk="LOW", side_effect_scope="filesystem")
def effect(step: str, info: CallInfo) -> dict:
    """Create this attempt's effect file once per idempotency key (the key dedups)."""
    with open(HERE / "attempts.log", "a") as log:
        log.write(f"{info.idempotency_key}\\n")
    time.sleep(0.01)
    name = str(info.idempotency_key).replace(":", "_")
    try:
        fd = os.open(HERE / "effects" / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return {"step": step, "again": True}
    os.write(fd, f"{info.run_id} {step}".encode())
    os.close(fd)
    return {"step": step, "again": False}
'''

POLICY = """
version: 1
rules:
  - id: chaos
    when: {capability: "chaos.*"}
    decision: ALLOW
"""

WORKFLOW = """
name: chaos
steps:
""" + "".join(
    f"  - id: {s}\n    capability: chaos.effect\n    inputs: {{step: {s}}}\n" for s in STEPS
)


def _worker(aifr_bin: str, project: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [aifr_bin, "worker", "--poll", "0.2", "--concurrency", "2", "-p", str(project)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait(condition: object, bound_s: float, what: str) -> None:
    deadline = time.monotonic() + bound_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """``None`` for the project's SQLite file, else a fresh PostgreSQL schema's URL."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("pg_url"))


def _rows(url: str | None, project: Path, query: str) -> list[tuple[object, ...]]:
    if url is not None:
        return pg_rows(url, query)
    conn = sqlite3.connect(project / ".aifr" / "aifr.db")
    try:
        return [tuple(row) for row in conn.execute(query)]
    finally:
        conn.close()


def test_runs_survive_two_workers_killed_with_each_effect_once_and_one_verified_chain(
    tmp_path: Path,
    aifr_bin: str,
    clean_env: dict[str, str],
    database_url: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = tmp_path / "p"
    subprocess.run([aifr_bin, "init", str(project)], check=True, capture_output=True, env=clean_env)
    config = project / "aifr.toml"
    config.write_text(
        config.read_text().replace("capability_modules = []", 'capability_modules = ["chaos_caps"]')
    )
    (project / "chaos_caps.py").write_text(CAPS)
    (project / "effects").mkdir()
    (project / "policies" / "default.yaml").write_text(POLICY)
    (project / "workflows" / "chaos.yaml").write_text(WORKFLOW)
    env = {**clean_env, "AIFR_WORKFLOWS__LEASE_TTL_S": "3"}
    if database_url is not None:
        env["AIFR_DATABASE_URL"] = database_url
        monkeypatch.setenv("AIFR_DATABASE_URL", database_url)
    app = build_app(project)
    try:
        spec = app.workflow("chaos")
        for _ in range(RUNS):
            app.workflows.start(spec, {}, "agent", execute=False)
    finally:
        app.close()

    workers = [_worker(aifr_bin, project, env) for _ in range(4)]
    effects = project / "effects"
    try:
        for victim in random.sample(range(4), 2):
            floor = len(list(effects.iterdir())) + random.randint(20, 120)
            _wait(lambda f=floor: len(list(effects.iterdir())) >= f, 240, "no progress")
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait(timeout=30)
            workers.append(_worker(aifr_bin, project, env))

        def all_done() -> bool:
            rows = _rows(
                database_url, project, "SELECT count(*) FROM wf_runs WHERE state <> 'completed'"
            )
            return rows[0][0] == 0

        _wait(all_done, 400, "runs left unfinished")
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            if worker.poll() is None:
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()

    made = Counter(path.read_text() for path in effects.iterdir())
    assert len(made) == RUNS * len(STEPS)  # every step of every run did its effect...
    assert set(made.values()) == {1}  # ...exactly once
    attempts = (project / "attempts.log").read_text().split()
    print(f"{len(attempts)} attempts for {RUNS * len(STEPS)} steps")  # re-runs after kills
    states = _rows(database_url, project, "SELECT state, count(*) FROM wf_runs GROUP BY state")
    assert states == [("completed", RUNS)]
    verify = run_cli(aifr_bin, project, env, "audit", "verify", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["ok"] is True
