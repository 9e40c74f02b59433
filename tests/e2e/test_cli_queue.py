"""``aifr run --queue``: a run stored for the workers, driven by ``aifr worker``, not by ``aifr run``.

On either backend: queued runs wait, a later ``aifr run`` of another workflow leaves them
in the queue (it resumes only runs a crash interrupted), and a worker started afterwards
drives each of them once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_kit import init_project, run_cli
from test_scaleout_workers import _rows, database_url  # noqa: F401  # the backend fixture

POLICY = (
    "version: 1\nrules:\n  - id: files\n    when: {capability: 'io.fs.*'}\n    decision: ALLOW\n"
)
NOTE = """
name: note
inputs:
  name: {type: string}
steps:
  - id: write
    capability: io.fs.write_file
    inputs: {path: "notes/{{ inputs.name }}.txt", content: "{{ inputs.name }}"}
"""


@pytest.fixture
def project(tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]) -> Path:
    files = {"policies/default.yaml": POLICY, "workflows/note.yaml": NOTE}
    init_project(aifr_bin, tmp_path, clean_env, files)
    (tmp_path / "notes").mkdir()
    return tmp_path


def test_queued_runs_wait_for_a_worker_and_aifr_run_leaves_them_queued(
    project: Path,
    aifr_bin: str,
    clean_env: dict[str, str],
    database_url: str | None,  # noqa: F811
) -> None:
    env = {**clean_env, **({"AIFR_DATABASE_URL": database_url} if database_url else {})}
    queued = [
        run_cli(aifr_bin, project, env, "run", "note", "-i", f"name=q{n}", "--queue", "--json")
        for n in range(3)
    ]
    assert all(q.returncode == 0 for q in queued), [q.stderr for q in queued]
    ids = {json.loads(q.stdout)["id"] for q in queued}
    assert {json.loads(q.stdout)["state"] for q in queued} == {"pending"}

    inline = run_cli(aifr_bin, project, env, "run", "note", "-i", "name=now")
    states = dict(_rows(database_url, project, "SELECT id, state FROM wf_runs"))

    assert inline.returncode == 0, inline.stderr
    assert {states[i] for i in ids} == {"pending"}  # not drained by aifr run
    assert sorted(p.name for p in (project / "notes").iterdir()) == ["now.txt"]

    log = project / "worker.log"
    with log.open("w") as sink:
        worker = subprocess.Popen(
            [aifr_bin, "worker", "--poll", "0.1", "-p", str(project)],
            stdout=subprocess.DEVNULL, stderr=sink, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while _rows(
            database_url, project, "SELECT count(*) FROM wf_runs WHERE state <> 'completed'"
        )[0][0]:
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the worker did not drain the queue"
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    verified = run_cli(aifr_bin, project, env, "audit", "verify")

    assert sorted(p.read_text() for p in (project / "notes").iterdir()) == ["now", "q0", "q1", "q2"]
    assert verified.returncode == 0, verified.stderr


def test_queue_with_wait_is_refused_before_any_run_is_stored(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    refused = run_cli(
        aifr_bin, project, clean_env, "run", "note", "-i", "name=x", "--queue", "--wait"
    )
    listed = run_cli(aifr_bin, project, clean_env, "runs", "list", "--json")

    assert refused.returncode == 2
    assert "--queue" in refused.stderr and "aifr worker" in refused.stderr
    assert json.loads(listed.stdout) == []
