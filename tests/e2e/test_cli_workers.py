"""``aifr workers`` and ``aifr status``: the worker processes sharing a database, as they come and go.

Two real ``aifr worker`` processes register themselves; the one driving a slow run shows
it held; ``kill -9`` leaves its row, shown ``exited`` (its process is gone from this
host); SIGTERM removes the other's row; a worker of another machine unseen for longer
than a lease shows ``lost``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from cli_kit import init_project, run_cli
from test_scaleout_workers import database_url  # noqa: F401  # the backend fixture
from test_worker_stop import CAPS, POLICY, WORKFLOW, _wait

from aifr.storage.postgres.database import PostgresDatabase
from aifr.storage.postgres.workers import PostgresWorkerRegistry
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.workers import SqliteWorkerRegistry
from aifr.workflows.ports import WorkerInfo


def _start(
    aifr_bin: str, project: Path, env: dict[str, str], concurrency: int
) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [aifr_bin, "worker", "--poll", "0.2", "-c", str(concurrency), "-p", str(project)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert worker.stdout is not None and worker.stdout.readline(), "the worker did not start"
    return worker


def _workers(aifr_bin: str, project: Path, env: dict[str, str]) -> dict[int, dict[str, object]]:
    listed = run_cli(aifr_bin, project, env, "workers", "--json")
    assert listed.returncode == 0, listed.stderr
    return {int(w["pid"]): w for w in json.loads(listed.stdout)}


def _register_elsewhere(url: str | None, project: Path, seen_s_ago: float) -> None:
    """A worker of another machine whose last sign of life is ``seen_s_ago`` old."""
    at = time.time() - seen_s_ago
    far = WorkerInfo("far-away:7:ab", "far-away", 7, 2, "0.1.0", at, at)
    if url is not None:
        dsn, schema = url.rsplit("schema=", 1)
        postgres = PostgresDatabase(dsn.rstrip("?&"), schema=schema)
        try:
            PostgresWorkerRegistry(postgres).announce(far)
        finally:
            postgres.close()
        return
    database = SqliteDatabase(project / ".aifr" / "aifr.db")
    try:
        SqliteWorkerRegistry(database).announce(far)
    finally:
        database.close()


def test_workers_come_and_go_and_show_the_runs_they_hold(
    tmp_path: Path,
    aifr_bin: str,
    clean_env: dict[str, str],
    database_url: str | None,  # noqa: F811
) -> None:
    files = {"slow_caps.py": CAPS, "policies/default.yaml": POLICY, "workflows/slow.yaml": WORKFLOW}
    project = init_project(aifr_bin, tmp_path, clean_env, files)
    config = project / "aifr.toml"
    config.write_text(
        config.read_text().replace("capability_modules = []", 'capability_modules = ["slow_caps"]')
    )
    env = {**clean_env, **({"AIFR_DATABASE_URL": database_url} if database_url else {})}
    assert "no workers" in run_cli(aifr_bin, project, env, "workers").stdout

    first = _start(aifr_bin, project, env, 1)
    second = _start(aifr_bin, project, env, 3)
    hold = project / "hold"  # the run's first step waits while it exists: it stays held
    hold.touch()
    try:
        queued = run_cli(aifr_bin, project, env, "run", "slow", "--queue")
        assert queued.returncode == 0, queued.stderr
        _wait(
            lambda: sum(int(w["runs"]) for w in _workers(aifr_bin, project, env).values()) == 1,
            20, "no worker showed the run it holds",
        )  # fmt: skip
        both = _workers(aifr_bin, project, env)
        hold.unlink()
        _register_elsewhere(database_url, project, seen_s_ago=120.0)  # lease_ttl_s is 30
        table = run_cli(aifr_bin, project, env, "workers")
        status = json.loads(run_cli(aifr_bin, project, env, "status", "--json").stdout)

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
        after = _workers(aifr_bin, project, env)
    finally:
        hold.unlink(missing_ok=True)
        for worker in (first, second):
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=30)
            if worker.stdout is not None:
                worker.stdout.close()

    assert set(both) == {first.pid, second.pid}
    assert {pid: w["state"] for pid, w in both.items()} == {first.pid: "live", second.pid: "live"}
    assert both[first.pid]["concurrency"] == 1 and both[second.pid]["concurrency"] == 3
    assert str(both[first.pid]["id"]).split(":")[1] == str(first.pid)
    assert table.returncode == 0 and "far-away" in table.stdout and "lost" in table.stdout
    assert status["workers"] == {"live": 2, "lost": 1}
    assert {pid: w["state"] for pid, w in after.items()} == {first.pid: "exited", 7: "lost"}


def test_a_worker_is_registered_once_it_says_it_is_polling(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    """The start-up line is the worker's word that it is ready: it is listed by then.

    It used to be printed before the worker announced itself (and before a collection
    of everything start-up built), so a supervisor or a test that waited for it could
    ask ``aifr workers`` and find nobody.
    """
    project = init_project(aifr_bin, tmp_path, clean_env, {})
    database = SqliteDatabase(project / ".aifr" / "aifr.db")
    registry = SqliteWorkerRegistry(database)  # opened first: read at once after the line
    worker = _start(aifr_bin, project, clean_env, 2)
    try:
        listed = {info.pid: info for info in registry.workers(time.time())}
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        if worker.stdout is not None:
            worker.stdout.close()
        database.close()
    assert worker.pid in listed
    assert listed[worker.pid].concurrency == 2
