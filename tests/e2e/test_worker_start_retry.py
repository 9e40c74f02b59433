"""A worker whose database fails as it registers waits for it, and stops when told to.

The failure is real: the test holds PostgreSQL's ``ACCESS EXCLUSIVE`` lock on the
workers' registry (``wf_workers``) while ``aifr worker`` starts, and the worker's
sessions give up on a lock after 200 ms (``lock_timeout``, through libpq's
``PGOPTIONS``), so each attempt to register fails with the server's error, as while
the server restarts. Everything before registering (the project, its migrations, the
wake-up listener) works.
"""

from __future__ import annotations

import select
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from cli_kit import pg_rows, run_cli
from psycopg import sql

from aifr.app import build_app

pytestmark = [pytest.mark.pg, pytest.mark.timeout(120)]

POLICY = "version: 1\nrules:\n  - id: data\n    when: {capability: 'data.*'}\n    decision: ALLOW\n"
WORKFLOW = (
    "name: one\nsteps:\n  - id: parse\n    capability: data.json.parse\n    inputs: {text: '[1]'}\n"
)


def _project(directory: Path, aifr_bin: str, env: dict[str, str]) -> None:
    subprocess.run([aifr_bin, "init", str(directory)], check=True, capture_output=True, env=env)
    (directory / "policies" / "default.yaml").write_text(POLICY)
    (directory / "workflows" / "one.yaml").write_text(WORKFLOW)
    upgraded = run_cli(aifr_bin, directory, env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr


@contextmanager
def _registry_locked(pg_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """The workers' registry locked against every other session until the block ends."""
    base, schema = pg_url.split("?schema=")
    with psycopg.connect(base) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute("LOCK TABLE wf_workers IN ACCESS EXCLUSIVE MODE")
        yield conn
        conn.rollback()


@contextmanager
def _locked_out_worker(
    aifr_bin: str, directory: Path, clean_env: dict[str, str], pg_url: str
) -> Iterator[subprocess.Popen[str]]:
    """``aifr worker`` on a new project, started and still refused while the registry is locked.

    The lock is released when the block ends; the worker is killed if the block fails.
    """
    env = {**clean_env, "AIFR_DATABASE_URL": pg_url}
    _project(directory, aifr_bin, env)
    with _registry_locked(pg_url):
        worker = subprocess.Popen(
            [aifr_bin, "worker", "--poll", "0.2", "-p", str(directory)],
            env={**env, "PGOPTIONS": "-c lock_timeout=200"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # Held until the worker was refused and said it tries again (before, the first
            # refusal ended it): a loaded host can take seconds to get the worker that far.
            assert _refused(worker, timeout_s=120.0), "the worker never tried again"
            assert _banner(worker, timeout_s=0.0) == ""
            yield worker
        except BaseException:
            worker.kill()
            raise


def _refused(worker: subprocess.Popen[str], timeout_s: float) -> bool:
    """Whether the worker logged, within ``timeout_s``, that it will try to register again."""
    assert worker.stderr is not None
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([worker.stderr], [], [], left)
        line = worker.stderr.readline() if ready else ""
        if "trying again" in line:
            return True
        if ready and not line:  # the worker closed it: it exited
            return False
    return False


def _banner(worker: subprocess.Popen[str], timeout_s: float) -> str:
    """The worker's first line on stdout, printed once it is registered ("" if none came)."""
    assert worker.stdout is not None
    ready, _, _ = select.select([worker.stdout], [], [], timeout_s)
    return worker.stdout.readline() if ready else ""


def _registered(pg_url: str) -> int:
    return len(pg_rows(pg_url, "SELECT id FROM wf_workers"))


def test_a_worker_that_cannot_register_yet_waits_then_registers_and_drives_runs(
    tmp_path: Path,
    aifr_bin: str,
    clean_env: dict[str, str],
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with _locked_out_worker(aifr_bin, tmp_path, clean_env, pg_url) as worker:
        assert worker.poll() is None, "the worker exited while it could not register"
    try:
        assert "polling every" in _banner(worker, timeout_s=30.0)
        assert _registered(pg_url) == 1
        monkeypatch.setenv("AIFR_DATABASE_URL", pg_url)
        app = build_app(tmp_path)
        try:
            app.workflows.start(app.workflow("one"), {}, "agent", execute=False)
            deadline = time.monotonic() + 30
            while pg_rows(pg_url, "SELECT state FROM wf_runs") != [("completed",)]:
                assert time.monotonic() < deadline, "the worker did not drive the run"
                time.sleep(0.1)
        finally:
            app.close()
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr


def test_a_worker_told_to_stop_while_it_cannot_register_exits_at_once(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str], pg_url: str
) -> None:
    with _locked_out_worker(aifr_bin, tmp_path, clean_env, pg_url) as worker:
        stopped_at = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=10)
        # Within its pause of at most a few seconds, not after its 30 s of retrying.
        assert time.monotonic() - stopped_at < 5.0
    assert worker.returncode != 0
    assert "registering a worker failed" in stderr
    assert _registered(pg_url) == 0
