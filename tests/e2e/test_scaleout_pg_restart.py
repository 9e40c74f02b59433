"""PostgreSQL restarted mid-run: workers reconnect and nothing is lost.

A private cluster (``private_pg``; the shared test server is never restarted) holds the
state of 30 three-step workflows driven by two ``aifr worker`` processes. Part way
through, the server is restarted with ``pg_ctl restart -m fast``, which closes every
connection. The workers stay up, reconnect, and finish: every run completed, every
step's effect happened exactly once, and the audit chain verifies.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from cli_kit import run_cli
from private_pg import cluster_unavailable, private_cluster

from aifr.app import build_app

pytestmark = [pytest.mark.pg, pytest.mark.slow, pytest.mark.timeout(300)]

RUNS = 30
STEPS = ("s1", "s2", "s3")

CAPS = '''
import os
import time
from pathlib import Path

from aifr.capabilities import CallInfo, capability

HERE = Path(__file__).parent


@capability("restart.effect", operation="WRITE", risk="LOW", side_effect_scope="filesystem")
def effect(step: str, info: CallInfo) -> dict:
    """Create this step's effect file once per idempotency key."""
    time.sleep(0.05)
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
  - id: restart
    when: {capability: "restart.*"}
    decision: ALLOW
"""

WORKFLOW = """
name: restart
steps:
""" + "".join(
    f"  - id: {s}\n    capability: restart.effect\n    inputs: {{step: {s}}}\n" for s in STEPS
)


def _wait(condition: Callable[[], bool], bound_s: float, what: str) -> None:
    deadline = time.monotonic() + bound_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _states(dsn: str) -> dict[str, int]:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SET search_path TO aifr_restart")
            rows = conn.execute("SELECT state, count(*) FROM wf_runs GROUP BY state").fetchall()
    except psycopg.OperationalError:
        return {}
    return {str(state): int(count) for state, count in rows}


def _registered(dsn: str) -> int:
    """Workers announced in the registry: each is past its start-up, in its loop."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SET search_path TO aifr_restart")
            row = conn.execute("SELECT count(*) FROM wf_workers").fetchone()
    except psycopg.Error:  # the schema not made yet, or the server away
        return 0
    return int(row[0]) if row is not None else 0


def test_workers_reconnect_after_a_postgres_restart_and_every_run_completes_once(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = cluster_unavailable()
    if reason is not None:
        pytest.skip(f"the restart test runs its own PostgreSQL cluster: {reason}")
    project = tmp_path / "p"
    subprocess.run([aifr_bin, "init", str(project)], check=True, capture_output=True, env=clean_env)
    config = project / "aifr.toml"
    config.write_text(
        config.read_text().replace(
            "capability_modules = []", 'capability_modules = ["restart_caps"]'
        )
    )
    (project / "restart_caps.py").write_text(CAPS)
    effects = project / "effects"
    effects.mkdir()
    (project / "policies" / "default.yaml").write_text(POLICY)
    (project / "workflows" / "restart.yaml").write_text(WORKFLOW)

    with private_cluster() as cluster:
        url = f"{cluster.dsn}?schema=aifr_restart"
        env = {**clean_env, "AIFR_DATABASE_URL": url, "AIFR_WORKFLOWS__LEASE_TTL_S": "3"}
        monkeypatch.setenv("AIFR_DATABASE_URL", url)
        app = build_app(project)
        try:
            spec = app.workflow("restart")
            for _ in range(RUNS):
                app.workflows.start(spec, {}, "agent", execute=False)
        finally:
            app.close()
        workers = []
        for n in range(2):
            with (project / f"worker-{n}.log").open("wb") as log:
                workers.append(
                    subprocess.Popen(
                        [aifr_bin, "worker", "--poll", "0.2", "-c", "2", "-p", str(project)],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        try:
            # Both running, not one still starting: a worker that cannot announce itself
            # at start-up exits by design (Presence), and on a loaded host one worker
            # alone made the progress below while the other was still starting.
            _wait(lambda: _registered(cluster.dsn) == 2, 120, "the workers did not register")
            _wait(lambda: len(list(effects.iterdir())) >= 20, 120, "no progress before restart")
            cluster.restart()  # every connection of every worker is closed
            _wait(
                lambda: _states(cluster.dsn).get("completed") == RUNS,
                180,
                f"runs left unfinished after the restart: {_states(cluster.dsn)}",
            )
            survivors = [w.poll() is None for w in workers]
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)
            for worker in workers:
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()
        assert survivors == [True, True]  # the workers reconnected rather than died
        made = Counter(path.read_text() for path in effects.iterdir())
        assert len(made) == RUNS * len(STEPS)
        assert set(made.values()) == {1}
        assert _states(cluster.dsn) == {"completed": RUNS}
        verify = run_cli(aifr_bin, project, env, "audit", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
