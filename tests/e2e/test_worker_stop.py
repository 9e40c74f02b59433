"""A worker told to stop hands its run on between steps, instead of finishing the whole run.

``aifr worker`` on SIGTERM finishes the step in flight, gives the run's lease back and
exits; another worker takes the run over at once (woken by ``NOTIFY`` on PostgreSQL,
not by its poll) and every step's effect still happens exactly once.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from cli_kit import init_project, run_cli
from test_scaleout_workers import _rows, database_url  # noqa: F401  # the backend fixture

STEP_S = 1.0
STEPS = ("s1", "s2", "s3", "s4", "s5", "s6")

CAPS = f'''
import time
from pathlib import Path

from aifr.capabilities import CallInfo, capability

HERE = Path(__file__).parent


@capability("slow.step", operation="WRITE", risk="LOW", side_effect_scope="filesystem")
def step(name: str, info: CallInfo) -> dict:
    """Wait while the test holds the steps back, take {STEP_S} s, log this attempt's key."""
    deadline = time.monotonic() + 60
    while (HERE / "hold").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep({STEP_S})
    with open(HERE / "effects.log", "a") as log:
        log.write(f"{{info.idempotency_key}}\\n")
    return {{"step": name}}
'''
POLICY = "version: 1\nrules:\n  - id: slow\n    when: {capability: 'slow.*'}\n    decision: ALLOW\n"
WORKFLOW = "name: slow\nsteps:\n" + "".join(
    f"  - id: {s}\n    capability: slow.step\n    inputs: {{name: {s}}}\n" for s in STEPS
)


def _worker(
    aifr_bin: str, project: Path, env: dict[str, str], poll: float
) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [aifr_bin, "worker", "--poll", str(poll), "-p", str(project)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert worker.stdout is not None and worker.stdout.readline(), "the worker did not start"
    return worker


def _wait(condition: object, bound_s: float, what: str) -> float:
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < bound_s, what
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_stopped_worker_hands_its_run_on_between_steps_and_another_finishes_it_at_once(
    tmp_path: Path,
    aifr_bin: str,
    clean_env: dict[str, str],
    database_url: str | None,  # noqa: F811
) -> None:
    project = init_project(
        aifr_bin,
        tmp_path,
        clean_env,
        {
            "slow_caps.py": CAPS,
            "policies/default.yaml": POLICY,
            "workflows/slow.yaml": WORKFLOW,
        },
    )
    config = project / "aifr.toml"
    config.write_text(
        config.read_text().replace("capability_modules = []", 'capability_modules = ["slow_caps"]')
    )
    env = {**clean_env, **({"AIFR_DATABASE_URL": database_url} if database_url else {})}
    effects = project / "effects.log"
    first = _worker(aifr_bin, project, env, poll=0.2)
    second = None
    hold = project / "hold"  # the first step waits while it exists, however slow the host
    hold.touch()
    try:
        queued = run_cli(aifr_bin, project, env, "run", "slow", "--queue")
        assert queued.returncode == 0, queued.stderr
        _wait(lambda: _rows(database_url, project, "SELECT lease_owner FROM wf_runs")[0][0], 10,
              "the first worker never took the run")  # fmt: skip
        # Idle beside it: polls too rarely to matter; on PostgreSQL only NOTIFY wakes it.
        second = _worker(aifr_bin, project, env, poll=0.2 if database_url is None else 60)

        hold.unlink()  # the first step goes on: the stop comes while it is in flight
        first.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        first.wait(timeout=30)
        stopped_after = time.monotonic() - stopping
        handed = _rows(database_url, project, "SELECT state, lease_owner FROM wf_runs")[0]
        done_then = len(effects.read_text().split()) if effects.exists() else 0
        finished_after = _wait(
            lambda: _rows(database_url, project, "SELECT state FROM wf_runs")[0][0] == "completed",
            30, "the second worker did not finish the run",
        )  # fmt: skip
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=30)
            if worker is not None and worker.stdout is not None:
                worker.stdout.close()
    keys = Counter(effects.read_text().split())
    verified = run_cli(aifr_bin, project, env, "audit", "verify")

    assert stopped_after < STEP_S + 3.0  # the step in flight, not the 5 s left of the run
    assert handed[0] == "running"  # not finished by the stopping worker
    assert f":{first.pid}:" not in f"{handed[1]}"  # its lease given back (or taken already)
    assert done_then < len(STEPS)
    assert finished_after < (len(STEPS) - done_then) * STEP_S + 10  # not the poll, not the TTL
    assert len(keys) == len(STEPS) and set(keys.values()) == {1}  # each effect exactly once
    assert verified.returncode == 0, verified.stderr
