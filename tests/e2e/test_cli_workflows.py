"""``aifr run``, ``aifr runs``, ``aifr worker`` and approvals, as a user runs them."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cli_kit import run_cli as _aifr

POLICY = """
version: 1
roles:
  ops: {principals: [bob]}
rules:
  - id: config-needs-ops
    when:
      capability: io.fs.write_file
      inputs: {path: {glob: "config/*"}}
    decision: REQUIRE_APPROVAL
    approvers: [ops]
  - id: files
    when: {capability: "io.fs.*"}
    decision: ALLOW
"""

WORKFLOW = """
name: rotate
inputs:
  path: {type: string}
  content: {type: string}
  copies: {type: integer, default: 1}
steps:
  - id: read
    capability: io.fs.read_file
    inputs: {path: "{{ inputs.path }}"}
  - id: backup
    capability: io.fs.write_file
    inputs: {path: "backup.txt", content: "{{ steps.read.output.content }}"}
  - id: write
    capability: io.fs.write_file
    inputs: {path: "{{ inputs.path }}", content: "{{ inputs.content }}"}
"""


@pytest.fixture
def project(tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]) -> Path:
    subprocess.run(
        [aifr_bin, "init", str(tmp_path)], check=True, capture_output=True, env=clean_env
    )
    (tmp_path / "policies" / "default.yaml").write_text(POLICY)
    (tmp_path / "workflows" / "rotate.yaml").write_text(WORKFLOW)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "app.conf").write_text("old\n")
    return tmp_path


def test_a_run_pauses_for_approval_and_the_worker_finishes_it_once_approved(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    inputs = [
        "rotate",
        "--input",
        "path=config/app.conf",
        "--input",
        "content=new\n",
        "--as",
        "agent",
    ]
    plan = _aifr(aifr_bin, project, clean_env, "run", *inputs, "--plan", "--json")
    assert plan.returncode == 0, plan.stderr
    assert [s["decision"] for s in json.loads(plan.stdout)] == [
        "ALLOW",
        "ALLOW",
        "REQUIRE_APPROVAL",
    ]

    started = _aifr(aifr_bin, project, clean_env, "run", *inputs, "--json")
    assert started.returncode == 4, started.stderr
    run = json.loads(started.stdout)
    assert run["state"] == "waiting_approval"
    approval_id = run["steps"][2]["approval_id"]

    idle = _aifr(aifr_bin, project, clean_env, "worker", "--once")
    assert "resumed 0 run(s)" in idle.stdout
    approved = _aifr(
        aifr_bin, project, clean_env, "approvals", "approve", approval_id, "--as", "bob"
    )
    assert approved.returncode == 0, approved.stderr
    assert "approvals execute" not in approved.stdout  # the run executes it, not the approver
    assert "aifr worker" in approved.stdout
    resumed = _aifr(aifr_bin, project, clean_env, "worker", "--once")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{run['id']}: completed" in resumed.stdout

    shown = json.loads(
        _aifr(aifr_bin, project, clean_env, "runs", "show", run["id"], "--json").stdout
    )
    assert [s["state"] for s in shown["steps"]] == ["completed"] * 3
    assert (project / "config" / "app.conf").read_text() == "new\n"
    listed = json.loads(_aifr(aifr_bin, project, clean_env, "runs", "list", "--json").stdout)
    assert [r["id"] for r in listed] == [run["id"]]
    verified = _aifr(aifr_bin, project, clean_env, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_cancelling_a_waiting_run_undoes_its_backup(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    started = _aifr(
        aifr_bin, project, clean_env, "run", "rotate", "-i", "path=config/app.conf",
        "-i", "content=x", "--as", "agent", "--json",
    )  # fmt: skip
    run_id = json.loads(started.stdout)["id"]
    assert (project / "backup.txt").exists()

    cancelled = _aifr(
        aifr_bin, project, clean_env, "runs", "cancel", run_id, "--as", "alice", "--json"
    )

    assert json.loads(cancelled.stdout)["state"] == "cancelled"
    assert not (project / "backup.txt").exists()
    again = _aifr(aifr_bin, project, clean_env, "runs", "retry-compensation", run_id)
    assert again.returncode != 0
    assert "workflow.bad_state" in again.stderr
    assert again.stdout == ""  # a refused action draws no run table before its error
    twice = _aifr(aifr_bin, project, clean_env, "runs", "cancel", run_id, "--as", "alice")
    assert twice.returncode != 0
    assert "workflow.bad_state" in twice.stderr
    assert twice.stdout == ""


def test_run_wait_stays_attached_until_another_principal_approves(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    waiting = subprocess.Popen(
        [aifr_bin, "run", "rotate", "-i", "path=config/app.conf", "-i", "content=waited\n",
         "--as", "agent", "--wait", "--json", "-p", str(project)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        pending: list[dict] = []
        while not pending:
            assert time.monotonic() < deadline, "no approval request appeared"
            listed = _aifr(aifr_bin, project, clean_env, "approvals", "list", "--json")
            pending = [a for a in json.loads(listed.stdout or "[]") if a["status"] == "pending"]
            time.sleep(0.1)
        _aifr(aifr_bin, project, clean_env, "approvals", "approve", pending[0]["id"], "--as", "bob")
        out, err = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, err
    assert json.loads(out)["state"] == "completed"
    assert (project / "config" / "app.conf").read_text() == "waited\n"


def test_an_unknown_workflow_and_bad_inputs_are_reported_by_code(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    missing = _aifr(aifr_bin, project, clean_env, "run", "nope")
    bad = _aifr(aifr_bin, project, clean_env, "run", "rotate", "-i", "copies=many")

    assert missing.returncode == 5
    assert "workflow.not_found" in missing.stderr
    assert bad.returncode == 2
    assert "input.invalid" in bad.stderr


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "9" * 5000])
def test_a_number_input_that_is_no_json_number_is_refused_before_any_run_exists(
    project: Path, aifr_bin: str, clean_env: dict[str, str], value: str
) -> None:
    refused = _aifr(aifr_bin, project, clean_env, "run", "rotate", "-i", f"copies={value}")
    runs = _aifr(aifr_bin, project, clean_env, "runs", "list", "--json")

    assert refused.returncode == 2
    assert "input.invalid" in refused.stderr
    assert json.loads(runs.stdout) == []


def test_the_demo_shows_approval_compensation_and_a_verified_ledger_within_a_minute(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    started = time.monotonic()
    demo = subprocess.run(
        [aifr_bin, "demo", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean_env, "COLUMNS": "40"},
        check=False,
    )

    assert demo.returncode == 0, demo.stderr
    assert time.monotonic() - started < 60
    out = demo.stdout
    assert "io.fs.write_file" in out  # capabilities listed first
    assert "REQUIRE_APPROVAL" in out  # the plan shows policy decisions
    assert "approval.self_approval" in out
    assert "byte-identical" in out
    assert "aifr audit verify: ok" in out
    assert (
        tmp_path / "demo" / "config" / "app.conf"
    ).read_text() == "replicas = 4\nlog_level = info\n"


def test_the_worker_takes_a_signed_approval_callback_and_finishes_the_run(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    import socket

    import httpx

    from aifr.workflows.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**clean_env, "AIFR_APPROVALS__WEBHOOK_SECRET": "s3cret-for-tests"}
    started = _aifr(
        aifr_bin, project, env, "run", "rotate", "-i", "path=config/app.conf",
        "-i", "content=via-callback\n", "--as", "agent", "--json",
    )  # fmt: skip
    run = json.loads(started.stdout)
    approval_id = run["steps"][2]["approval_id"]
    worker = subprocess.Popen(
        [aifr_bin, "worker", "--poll", "0.2", "--callback-port", str(port), "-p", str(project)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        decision = {"approval_id": approval_id, "decision": "approve", "approver": "bob"}
        body = json.dumps(decision).encode()
        deadline = time.monotonic() + 30
        response = None
        while response is None:
            assert time.monotonic() < deadline, "the callback never came up"
            sent = int(time.time())
            headers = {
                TIMESTAMP_HEADER: str(sent),
                SIGNATURE_HEADER: sign(b"s3cret-for-tests", sent, body),
            }
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/approvals/{approval_id}/decision",
                    content=body, headers=headers, timeout=5,
                )  # fmt: skip
            except httpx.ConnectError:
                time.sleep(0.1)
        assert response.status_code == 200, response.text
        state = None
        while state != "completed":
            assert time.monotonic() < deadline, f"run stuck in {state}"
            shown = _aifr(aifr_bin, project, env, "runs", "show", run["id"], "--json")
            state = json.loads(shown.stdout)["state"]
            time.sleep(0.1)
        text = _aifr(aifr_bin, project, env, "runs", "show", run["id"])
        assert "completed" in text.stdout
        assert "backup" in text.stdout
        assert run["id"] in _aifr(aifr_bin, project, env, "runs", "list").stdout
    finally:
        worker.terminate()
        worker.communicate(timeout=30)
    assert worker.returncode == 0
    assert (project / "config" / "app.conf").read_text() == "via-callback\n"


def test_runs_resume_drives_an_approved_run_under_the_live_table(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    started = _aifr(
        aifr_bin, project, clean_env, "run", "rotate", "-i", "path=config/app.conf",
        "-i", "content=resumed\n", "--as", "agent", "--json",
    )  # fmt: skip
    run = json.loads(started.stdout)
    _aifr(aifr_bin, project, clean_env, "approvals", "approve", run["steps"][2]["approval_id"],
          "--as", "bob")  # fmt: skip

    resumed = _aifr(aifr_bin, project, clean_env, "runs", "resume", run["id"], "--as", "ops")

    assert resumed.returncode == 0, resumed.stderr
    table = resumed.stdout
    assert run["id"] in table
    assert all(step in table for step in ("read", "backup", "write"))
    assert table.count("completed") >= 4  # the run and its three steps
    assert (project / "config" / "app.conf").read_text() == "resumed\n"


def test_runs_show_follow_stays_live_while_a_worker_drives_the_run(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    from aifr.app import build_app

    (project / "notes.txt").write_text("draft\n")
    app = build_app(project)
    try:
        pending = app.workflows.start(
            app.workflow("rotate"), {"path": "notes.txt", "content": "final\n"}, "agent",
            execute=False,
        )  # fmt: skip
    finally:
        app.close()
    run_id = pending.run.id
    follow = subprocess.Popen(
        [aifr_bin, "runs", "show", run_id, "--follow", "--poll", "0.1", "--json",
         "-p", str(project)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env,
    )  # fmt: skip
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            follow.wait(timeout=3)  # nobody drives the pending run: still following
        worker = _aifr(aifr_bin, project, clean_env, "worker", "--once")
        assert f"{run_id}: completed" in worker.stdout, worker.stderr
        out, err = follow.communicate(timeout=30)
    finally:
        follow.kill()
    assert follow.returncode == 0, err
    assert json.loads(out)["state"] == "completed"
    assert (project / "notes.txt").read_text() == "final\n"


def test_workflows_check_names_each_bad_file_and_field_and_an_unknown_capability(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    good = _aifr(aifr_bin, project, clean_env, "workflows", "check")
    assert good.returncode == 0, good.stderr
    assert "rotate v1" in good.stdout
    workflows = project / "workflows"
    (workflows / "retry.yaml").write_text(
        "name: retry\nsteps:\n  - id: a\n    capability: io.fs.stat\n"
        "    inputs: {path: x}\n    retry: {count: -1}\n"
    )
    (workflows / "ghost.yaml").write_text(
        "name: ghost\nsteps:\n  - id: a\n    capability: io.fs.read_file\n"
        "    inputs: {path: x}\n  - id: b\n    capability: no.such.thing\n"
    )

    bad = _aifr(aifr_bin, project, clean_env, "workflows", "check")

    assert bad.returncode == 1
    problems = " ".join(bad.stderr.split())
    assert "retry.yaml: invalid workflow: steps[0].retry.count" in problems
    assert "ghost.yaml: steps[1].capability: no.such.thing is not registered" in problems
    assert "rotate.yaml" not in problems
    only_good = _aifr(
        aifr_bin, project, clean_env, "workflows", "check", str(workflows / "rotate.yaml")
    )
    assert only_good.returncode == 0, only_good.stderr
    schema = subprocess.run(
        [aifr_bin, "workflows", "schema"], capture_output=True, text=True, env=clean_env,
        timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(schema.stdout)["title"] == "aifr workflow"


def _scrape(port: int) -> dict[str, float]:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_the_worker_serves_prometheus_metrics_of_runs_and_the_invocations_it_drives(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = _aifr(
        aifr_bin, project, clean_env, "run", "rotate", "-i", "path=config/app.conf",
        "-i", "content=metered\n", "--as", "agent", "--json",
    )  # fmt: skip
    run = json.loads(started.stdout)
    approval_id = run["steps"][2]["approval_id"]
    worker = subprocess.Popen(
        [aifr_bin, "worker", "--poll", "0.2", "--metrics-port", str(port), "-p", str(project)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        samples = None
        while samples is None:
            assert time.monotonic() < deadline, "the metrics endpoint never came up"
            try:
                samples = _scrape(port)
            except httpx.ConnectError:
                time.sleep(0.1)
        assert samples['aifr_workflow_runs{state="waiting_approval"}'] == 1
        assert samples["aifr_workflow_queue_depth"] == 0
        assert samples["aifr_notifications_pending"] == 0
        approved = _aifr(
            aifr_bin, project, clean_env, "approvals", "approve", approval_id, "--as", "bob"
        )
        assert approved.returncode == 0, approved.stderr
        while samples.get('aifr_workflow_runs{state="completed"}') != 1:
            assert time.monotonic() < deadline, "the worker never finished the run"
            time.sleep(0.1)
            samples = _scrape(port)
        counted = {
            name: value for name, value in samples.items() if name.startswith("aifr_invocations")
        }
        assert any('decision="REQUIRE_APPROVAL"' in n and 'outcome="ok"' in n for n in counted)
        assert samples['aifr_approval_wait_seconds_count{capability="io.fs.write_file"}'] == 1
        assert samples["aifr_audit_append_seconds_count"] >= 1
        assert any(n.startswith("aifr_invocation_duration_seconds_bucket") for n in samples)
        assert "agent" not in " ".join(samples)  # principals are never labels
    finally:
        worker.terminate()
        worker.communicate(timeout=30)
    assert worker.returncode == 0


def test_the_worker_s_callback_server_is_stopped_and_waited_for_before_the_database_closes(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker closes its database right after stopping the callback server: the
    # server's thread (its event loop, a decision being written) must be gone by then.
    import threading

    import httpx

    from aifr.app import build_app
    from aifr.cli.worker import _callback_server
    from aifr.workflows import Worker

    monkeypatch.setenv("AIFR_APPROVALS__WEBHOOK_SECRET", "s3cret-for-tests")
    app = build_app(project)
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        stop = _callback_server(app, Worker(app.workflows, poll_s=1.0), "127.0.0.1", port)
        deadline = time.monotonic() + 30
        while True:  # up: an unsigned decision is refused
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/approvals/x/decision", timeout=5)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the callback never came up"
                time.sleep(0.05)
        assert answer.status_code in (401, 403)
        assert any(t.name == "aifr-approval-callback" for t in threading.enumerate())

        stop()

        assert not any(t.name == "aifr-approval-callback" for t in threading.enumerate())
        with pytest.raises(httpx.ConnectError):
            httpx.post(f"http://127.0.0.1:{port}/approvals/x/decision", timeout=5)
    finally:
        app.close()
