"""Partition: a worker cut off from PostgreSQL mid-step loses its run, and its late writes.

Two ``aifr worker`` processes run in their own network namespaces and reach the host's
PostgreSQL through veth pairs and relays (``scaleout_net``). Worker A is held inside a
step, then its link goes down; A finishes the step's effect while cut off and tries to
commit. Its lease expires (the test's lease time to live is 2 s), worker B takes the run
over and re-runs the interrupted attempt with the same idempotency key, and finishes
every run. When A's link comes back, A's stalled commit reaches the database and is
refused by the lease-epoch fence. Every step's effect happened exactly once, the
step's stored result is B's, the interrupted attempt has one audit record, and the
chain verifies.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cli_kit import pg_rows, run_cli
from scaleout_net import Namespace, can_make_namespaces, namespaces

from aifr.app import build_app

pytestmark = [pytest.mark.pg, pytest.mark.slow, pytest.mark.timeout(300)]

RUNS = 8
STEPS = ("s1", "s2", "s3")

CAPS = '''
import os
import time
from pathlib import Path

from aifr.capabilities import CallInfo, capability

HERE = Path(__file__).parent


@capability("part.effect", operation="WRITE", risk="LOW", side_effect_scope="filesystem")
def effect(step: str, info: CallInfo) -> dict:
    """Do this step's effect once per idempotency key; wait first while held."""
    worker = os.environ["PART_WORKER"]
    with open(HERE / "attempts.log", "a") as log:
        log.write(f"{worker} {info.idempotency_key}\\n")
    hold = HERE / f"hold-{worker}"
    if hold.exists():
        (HERE / f"inside-{worker}").write_text(str(info.idempotency_key))
        deadline = time.monotonic() + 120
        while hold.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    name = str(info.idempotency_key).replace(":", "_")
    try:
        fd = os.open(HERE / "effects" / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return {"step": step, "worker": worker, "again": True}
    os.write(fd, f"{info.run_id} {step}".encode())
    os.close(fd)
    return {"step": step, "worker": worker, "again": False}
'''

POLICY = """
version: 1
rules:
  - id: part
    when: {capability: "part.*"}
    decision: ALLOW
"""

WORKFLOW = """
name: part
steps:
""" + "".join(
    f"  - id: {s}\n    capability: part.effect\n    inputs: {{step: {s}}}\n" for s in STEPS
)


def _logs(project: Path) -> str:
    """The tail of each worker's log, for a failure message (CI shows the message)."""
    return "".join(
        f"\n--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
        for log in sorted(project.glob("worker-*.log"))
    )


def _wait(
    condition: Callable[[], bool],
    bound_s: float,
    what: str,
    workers: dict[str, subprocess.Popen[bytes]],
    project: Path,
) -> None:
    """Wait for ``condition``; fail at once, with the logs, if a worker has exited."""
    deadline = time.monotonic() + bound_s
    while not condition():
        gone = {name: w.returncode for name, w in workers.items() if w.poll() is not None}
        assert not gone, f"{what}: worker(s) exited {gone}{_logs(project)}"
        assert time.monotonic() < deadline, f"{what} within {bound_s:g}s{_logs(project)}"
        time.sleep(0.2)


def _project(tmp_path: Path, aifr_bin: str, env: dict[str, str]) -> Path:
    project = tmp_path / "p"
    subprocess.run([aifr_bin, "init", str(project)], check=True, capture_output=True, env=env)
    config = project / "aifr.toml"
    config.write_text(
        config.read_text().replace("capability_modules = []", 'capability_modules = ["part_caps"]')
    )
    (project / "part_caps.py").write_text(CAPS)
    (project / "effects").mkdir()
    (project / "policies" / "default.yaml").write_text(POLICY)
    (project / "workflows" / "part.yaml").write_text(WORKFLOW)
    return project


def _worker(
    space: Namespace, name: str, aifr_bin: str, project: Path, env: dict[str, str], url: str
) -> subprocess.Popen[bytes]:
    with (project / f"worker-{name}.log").open("wb") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [*space.prefix(), aifr_bin, "worker", "--poll", "0.2", "-p", str(project)],
            env={**env, "AIFR_DATABASE_URL": space.url(url), "PART_WORKER": name},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)


def test_a_partitioned_worker_loses_its_run_and_its_late_writes_are_refused(
    tmp_path: Path,
    aifr_bin: str,
    clean_env: dict[str, str],
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reason = can_make_namespaces()
    if reason is not None:
        pytest.skip(f"partition test needs network namespaces (root, CAP_NET_ADMIN): {reason}")
    parts = urlsplit(pg_url)
    target = (parts.hostname or "127.0.0.1", parts.port or 5432)
    project = _project(tmp_path, aifr_bin, clean_env)
    env = {**clean_env, "AIFR_WORKFLOWS__LEASE_TTL_S": "2"}
    monkeypatch.setenv("AIFR_DATABASE_URL", pg_url)
    app = build_app(project)
    try:
        spec = app.workflow("part")
        for _ in range(RUNS):
            app.workflows.start(spec, {}, "agent", execute=False)
    finally:
        app.close()
    (project / "hold-A").touch()  # A's first step waits inside the capability

    with namespaces(2, target) as (space_a, space_b):
        # A starts alone: B, started together with it, could finish every run before
        # A's process is up (it did once on a loaded CI machine), leaving A nothing.
        workers = {"A": _worker(space_a, "A", aifr_bin, project, env, pg_url)}
        try:
            inside = project / "inside-A"
            _wait(inside.exists, 120, "worker A never reached a step", workers, project)
            workers["B"] = _worker(space_b, "B", aifr_bin, project, env, pg_url)
            key = inside.read_text()
            run_id, step_id = key.split(":")[1:3]
            space_a.cut()  # A is cut off mid-step...
            (project / "hold-A").unlink()  # ...finishes the effect, and cannot commit it

            def all_done() -> bool:
                rows = pg_rows(pg_url, "SELECT count(*) FROM wf_runs WHERE state <> 'completed'")
                return rows[0][0] == 0

            _wait(
                all_done,
                120,
                "worker B did not finish the runs after A's lease expired",
                workers,
                project,
            )
            space_a.heal()  # A's stalled commit now reaches the database
            log_a = project / "worker-A.log"
            _wait(
                lambda: "workflow.lease_lost" in log_a.read_text(errors="replace"),
                90,
                "worker A's late write was never refused",
                workers,
                project,
            )
        finally:
            _stop(list(workers.values()))

    attempts = (project / "attempts.log").read_text().splitlines()
    assert f"A {key}" in attempts and f"B {key}" in attempts  # both ran the attempt...
    made = Counter(path.read_text() for path in (project / "effects").iterdir())
    assert len(made) == RUNS * len(STEPS)
    assert set(made.values()) == {1}  # ...and every effect happened once
    stored = pg_rows(
        pg_url,
        f"SELECT state, output FROM wf_steps WHERE run_id = '{run_id}' AND step_id = '{step_id}'",  # noqa: S608  # ids from the test
    )
    assert stored[0][0] == "completed"
    assert json.loads(str(stored[0][1])) == {"step": step_id, "worker": "B", "again": True}
    assert pg_rows(pg_url, "SELECT state, count(*) FROM wf_runs GROUP BY state") == [
        ("completed", RUNS)
    ]
    records = pg_rows(
        pg_url,
        "SELECT count(*) FROM aifr_audit_records WHERE kind = 'invocation' "  # noqa: S608  # key from the test
        f"AND details LIKE '%{key}%'",
    )
    assert records[0][0] == 1  # B's record of the attempt; A's was rolled back with its write
    verify = run_cli(aifr_bin, project, {**env, "AIFR_DATABASE_URL": pg_url}, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
