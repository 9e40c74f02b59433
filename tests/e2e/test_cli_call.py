"""``aifr call`` and ``aifr approvals`` as a user runs them, exit codes included."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

CAPS = '''
import logging
import time

from aifr import capability


@capability("shop.echo", operation="READ", risk="LOW")
def echo(text: str, times: int = 1, loud: bool = False, tags: list[str] | None = None) -> dict:
    """Echo text."""
    out = text * times
    return {"text": out.upper() if loud else out, "tags": tags or []}


@capability("shop.refund", operation="WRITE", risk="HIGH")
def refund(order: int, amount: float) -> dict[str, float]:
    """Refund an order."""
    with open("refunds.log", "a") as log:
        log.write(f"{order}\\n")
    return {"refunded": amount}


@capability("shop.secret_peek", operation="READ", risk="LOW")
def secret_peek(token: str) -> dict[str, str]:
    """Echo a token back, and fail loudly when asked."""
    logging.getLogger("shop_caps").warning("using token %s", token)  # its own log line
    if token.endswith("!"):
        raise RuntimeError(f"cannot use {token}")
    return {"token": token}


@capability("shop.rotate", operation="WRITE", risk="HIGH")
def rotate(account: str, password: str) -> dict[str, int]:
    """Set an account's password (the handler sees the real value)."""
    with open("rotated.log", "a") as log:
        log.write(f"{account}:{password}\\n")
    return {"length": len(password)}


@capability("shop.broken", operation="READ", risk="LOW")
def broken() -> None:
    """Always fails."""
    raise ValueError("broken on purpose")


@capability("shop.sleepy", operation="READ", risk="LOW", timeout_s=0.2)
def sleepy() -> None:
    """Sleeps past its timeout."""
    time.sleep(3)


@capability("shop.stuck", operation="READ", risk="LOW", timeout_s=0.3)
def stuck() -> None:
    """Hangs, as a network read with no timeout does."""
    time.sleep(600)


@capability("shop.purge", operation="READ", risk="LOW", tags=["forbidden"])
def purge() -> None:
    """Never allowed."""
'''

POLICY = """\
version: 1
roles:
  approver:
    principals: [bob]
rules:
  - id: no-purge
    when: {tags: forbidden}
    decision: DENY
    reason: purging is never allowed
  - id: allow-reads
    when: {operation: READ}
    decision: ALLOW
    reason: reading is low risk
  - id: refunds-need-approval
    when: {capability: ["shop.refund", "shop.rotate"]}
    decision: REQUIRE_APPROVAL
    reason: money leaves the shop
    approvers: [approver]
secrets:
  - names: [SHOP_TOKEN, LOUD]
    when: {capability: shop.secret_peek}
"""

CANARY = "canary-cli-5e1f0b7a9d"


@pytest.fixture
def project(aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]) -> Path:
    root = tmp_path / "shop"
    subprocess.run([aifr_bin, "init", str(root)], check=True, capture_output=True, env=clean_env)
    (root / "shop_caps.py").write_text(CAPS)
    (root / "policies" / "default.yaml").write_text(POLICY)
    config = root / "aifr.toml"
    config.write_text(
        config.read_text().replace("capability_modules = []", 'capability_modules = ["shop_caps"]')
    )
    return root


def aifr(
    aifr_bin: str, project: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [aifr_bin, *args],
        cwd=project,
        env={**env, "COLUMNS": "40", CANARY_VAR: CANARY},
        capture_output=True,
        text=True,
        timeout=60,
    )


CANARY_VAR = "SHOP_TOKEN"


def test_call_parses_values_by_schema_and_prints_result_decision_and_audit_id(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    done = aifr(
        aifr_bin, project, clean_env,
        "call", "shop.echo", "text=7", "times=2", "loud=true", 'tags=["a","b"]', "--as", "alice",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"text": "77"' in done.stdout
    assert "decision: ALLOW" in done.stdout and "allow-reads" in done.stdout
    assert "audit record: au-" in done.stdout
    as_json = aifr(aifr_bin, project, clean_env, "call", "shop.echo", "text=x", "--json")
    result = json.loads(as_json.stdout)
    assert result["status"] == "ok" and result["output"] == {"text": "x", "tags": []}
    assert result["principal"] == "local-user"
    assert result["decision"]["rule_id"] == "allow-reads"
    assert result["audit_id"].startswith("au-")


def test_input_file_and_pairs_combine_with_pairs_winning(
    aifr_bin: str, project: Path, clean_env: dict[str, str], tmp_path: Path
) -> None:
    inputs = tmp_path / "in.json"
    inputs.write_text(json.dumps({"text": "file", "times": 3}))
    done = aifr(
        aifr_bin, project, clean_env,
        "call", "shop.echo", "--input-file", str(inputs), "times=1", "--json",
    )  # fmt: skip
    assert json.loads(done.stdout)["output"]["text"] == "file"


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe{}",
        b'{"text": "a", "text": "b"}',
        b'{"text": "a", "times": NaN}',
        b'{"text": "a", "tags": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
)
def test_an_input_file_that_is_no_strict_json_is_bad_input_not_a_traceback(
    aifr_bin: str, project: Path, clean_env: dict[str, str], tmp_path: Path, content: bytes
) -> None:
    inputs = tmp_path / "in.json"
    inputs.write_bytes(content)
    done = aifr(aifr_bin, project, clean_env, "call", "shop.echo", "--input-file", str(inputs))
    assert done.returncode == 2, done.stderr
    assert "input.invalid" in done.stderr and "Traceback" not in done.stderr


def test_an_empty_idempotency_key_is_refused_rather_than_ignored(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    done = aifr(
        aifr_bin, project, clean_env, "call", "shop.echo", "text=a", "--idempotency-key", ""
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "input.invalid" in done.stderr and "--idempotency-key" in done.stderr


def test_an_empty_principal_is_refused_not_replaced_by_the_default(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    done = aifr(aifr_bin, project, clean_env, "call", "shop.echo", "text=a", "--as", "", "--json")
    assert done.returncode == 2, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["error"]["code"] == "input.invalid" and result["principal"] != "local-user"


@pytest.mark.parametrize(
    ("args", "exit_code", "code"),
    [
        (["shop.purge"], 3, "policy.denied"),
        (["shop.echo", "times=x", "text=a"], 2, "input.invalid"),
        (["shop.echo", "nonsense"], 2, "input.invalid"),
        (["shop.echo"], 2, "input.invalid"),
        (["shop.nope"], 5, "capability.not_found"),
        (["shop.echo@9", "text=a"], 5, "capability.version_not_found"),
        (["shop.broken"], 1, "execution.failed"),
        (["shop.sleepy"], 6, "execution.timeout"),
    ],
)
def test_each_failure_has_its_exit_code_and_error_code(
    aifr_bin: str,
    project: Path,
    clean_env: dict[str, str],
    args: list[str],
    exit_code: int,
    code: str,
) -> None:
    done = aifr(aifr_bin, project, clean_env, "call", *args, "--as", "alice", "--json")
    assert done.returncode == exit_code, done.stdout + done.stderr
    if done.stdout.strip():
        assert json.loads(done.stdout)["error"]["code"] == code
    else:
        assert code in done.stderr


def test_pending_approval_then_approve_by_another_then_execute_exactly_once(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    pending = aifr(
        aifr_bin,
        project,
        clean_env,
        "call",
        "shop.refund",
        "order=7",
        "amount=9.5",
        "--as",
        "alice",
    )
    assert pending.returncode == 4, pending.stderr
    listed = json.loads(aifr(aifr_bin, project, clean_env, "approvals", "list", "--json").stdout)
    assert [(a["status"], a["principal"], a["inputs"]) for a in listed] == [
        ("pending", "alice", {"order": 7, "amount": 9.5})
    ]
    approval_id = listed[0]["id"]
    assert approval_id in pending.stdout
    self_approval = aifr(
        aifr_bin, project, clean_env, "approvals", "approve", approval_id, "--as", "alice"
    )
    assert self_approval.returncode == 3
    assert "approval.self_approval" in self_approval.stderr
    outsider = aifr(
        aifr_bin, project, clean_env, "approvals", "approve", approval_id, "--as", "eve"
    )
    assert outsider.returncode == 3 and "approval.not_authorized" in outsider.stderr
    approved = aifr(
        aifr_bin, project, clean_env, "approvals", "approve", approval_id, "--as", "bob"
    )
    assert approved.returncode == 0, approved.stderr
    executed = aifr(aifr_bin, project, clean_env, "approvals", "execute", approval_id, "--json")
    assert executed.returncode == 0, executed.stderr
    assert json.loads(executed.stdout)["output"] == {"refunded": 9.5}
    again = aifr(
        aifr_bin, project, clean_env,
        "call", "shop.refund", "order=7", "amount=9.5", "--as", "alice", "--approval", approval_id,
    )  # fmt: skip
    assert again.returncode == 1 and "approval.consumed" in again.stderr
    assert (project / "refunds.log").read_text() == "7\n"
    shown = json.loads(
        aifr(aifr_bin, project, clean_env, "approvals", "show", approval_id, "--json").stdout
    )
    assert shown["status"] == "consumed" and shown["result"]["status"] == "ok"
    assert shown["result"]["audit_id"] == json.loads(executed.stdout)["audit_id"]


def test_approval_listings_redact_credentials_yet_execute_runs_the_real_request(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    password = "hunter2-approval-canary"
    pending = aifr(
        aifr_bin, project, clean_env,
        "call", "shop.rotate", "account=ops", f"password={password}", "--as", "alice",
    )  # fmt: skip
    assert pending.returncode == 4, pending.stderr
    listed = aifr(aifr_bin, project, clean_env, "approvals", "list", "--json")
    assert password not in listed.stdout
    approval = json.loads(listed.stdout)[0]
    assert approval["inputs"] == {"account": "ops", "password": "[REDACTED]"}
    for args in (["--json"], []):
        shown = aifr(aifr_bin, project, clean_env, "approvals", "show", approval["id"], *args)
        assert shown.returncode == 0, shown.stderr
        assert password not in shown.stdout and "[REDACTED]" in shown.stdout
    aifr(aifr_bin, project, clean_env, "approvals", "approve", approval["id"], "--as", "bob")
    executed = aifr(aifr_bin, project, clean_env, "approvals", "execute", approval["id"], "--json")
    assert executed.returncode == 0, executed.stderr
    assert json.loads(executed.stdout)["output"] == {"length": len(password)}
    assert (project / "rotated.log").read_text() == f"ops:{password}\n"


def test_rejected_requests_never_run(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    aifr(aifr_bin, project, clean_env, "call", "shop.refund", "order=1", "amount=1", "--as", "al")
    approval_id = json.loads(
        aifr(aifr_bin, project, clean_env, "approvals", "list", "--json").stdout
    )[0]["id"]
    rejected = aifr(
        aifr_bin, project, clean_env,
        "approvals", "reject", approval_id, "--as", "bob", "--reason", "no",
    )  # fmt: skip
    assert rejected.returncode == 0
    executed = aifr(aifr_bin, project, clean_env, "approvals", "execute", approval_id)
    assert executed.returncode == 1 and "approval.rejected" in executed.stderr
    assert not (project / "refunds.log").exists()


def test_unknown_approval_ids_are_not_found(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    done = aifr(aifr_bin, project, clean_env, "approvals", "show", "ap-missing")
    assert done.returncode == 5 and "approval.not_found" in done.stderr


def test_idempotency_key_returns_the_first_result(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    first = aifr(
        aifr_bin,
        project,
        clean_env,
        "call",
        "shop.echo",
        "text=a",
        "--idempotency-key",
        "k",
        "--json",
    )
    second = aifr(
        aifr_bin,
        project,
        clean_env,
        "call",
        "shop.echo",
        "text=a",
        "--idempotency-key",
        "k",
        "--json",
    )
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    assert two["replayed"] is True and one["replayed"] is False
    assert two["request_id"] == one["request_id"] and two["output"] == one["output"]
    conflict = aifr(
        aifr_bin, project, clean_env, "call", "shop.echo", "text=b", "--idempotency-key", "k"
    )
    assert conflict.returncode == 2 and "input.idempotency_conflict" in conflict.stderr


def test_a_canary_secret_never_reaches_cli_output_or_the_database(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    reference = f"secret://{CANARY_VAR}"
    outputs = [
        aifr(aifr_bin, project, clean_env, "call", "shop.secret_peek", f"token={reference}", *extra)
        for extra in (["--json"], [])
    ]
    failing_env = {**clean_env, "AIFR_LOG_LEVEL": "DEBUG"}
    (project / ".aifr" / "secrets").mkdir(exist_ok=True)
    (project / ".aifr" / "secrets" / "LOUD").write_text(CANARY + "!")
    outputs.append(
        aifr(aifr_bin, project, failing_env, "call", "shop.secret_peek", "token=secret://LOUD")
    )
    assert json.loads(outputs[0].stdout)["output"] == {"token": f"[secret:{CANARY_VAR}]"}
    failed = outputs[-1]
    assert failed.returncode == 1 and "execution.failed" in failed.stderr
    assert "cannot use [secret:LOUD]" in failed.stderr  # the error, scrubbed
    assert '"level": "WARNING"' in failed.stderr  # the JSON log line, scrubbed too
    # The same secret steered into a capability no `secrets` grant names is refused.
    outputs.append(aifr(aifr_bin, project, clean_env, "call", "shop.echo", f"text={reference}"))
    steered = outputs[-1]
    assert steered.returncode == 3 and "policy.denied" in steered.stderr
    assert f"secret://{CANARY_VAR} is not granted" in steered.stderr
    for done in outputs:
        assert CANARY not in done.stdout + done.stderr
    for path in (project / ".aifr").glob("aifr.db*"):
        assert CANARY.encode() not in path.read_bytes(), path.name


def test_the_circuit_opens_across_cli_calls_and_capabilities_show_reports_it(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    env = {**clean_env, "AIFR_RUNTIME__CIRCUIT_FAILURE_THRESHOLD": "2"}
    codes = [
        json.loads(aifr(aifr_bin, project, env, "call", "shop.broken", "--json").stdout)["error"][
            "code"
        ]
        for _ in range(3)
    ]
    assert codes == ["execution.failed", "execution.failed", "capability.circuit_open"]
    shown = aifr(aifr_bin, project, env, "capabilities", "show", "shop.broken")
    assert "circuit: open (2 consecutive failures)" in shown.stdout
    healthy = aifr(aifr_bin, project, env, "capabilities", "show", "shop.echo")
    assert "circuit: closed" in healthy.stdout


def test_a_handler_that_never_returns_does_not_keep_the_command_alive(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    """The handler is abandoned at its deadline; its thread must not hold up exit."""
    done = aifr(aifr_bin, project, clean_env, "call", "shop.stuck", "--as", "alice", "--json")

    assert done.returncode != 0
    assert json.loads(done.stdout)["error"]["code"] == "execution.timeout"
    tail = aifr(aifr_bin, project, clean_env, "audit", "export", "--format", "jsonl")
    outcomes = [json.loads(line)["outcome"] for line in tail.stdout.splitlines()]
    assert outcomes[-1] == "execution.timeout"


def test_eight_concurrent_executions_of_one_approval_run_the_command_once(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    pending = aifr(
        aifr_bin, project, clean_env, "call", "shop.refund", "order=8", "amount=1", "--as", "alice"
    )
    assert pending.returncode == 4, pending.stderr
    listed = json.loads(aifr(aifr_bin, project, clean_env, "approvals", "list", "--json").stdout)
    approval_id = listed[0]["id"]
    approved = aifr(
        aifr_bin, project, clean_env, "approvals", "approve", approval_id, "--as", "bob"
    )
    assert approved.returncode == 0, approved.stderr
    racers = [
        subprocess.Popen(  # all eight started before any is waited on
            [aifr_bin, "approvals", "execute", approval_id, "--json"],
            cwd=project,
            env={**clean_env, "COLUMNS": "40"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    outcomes = [racer.communicate(timeout=120) for racer in racers]
    codes = [racer.returncode for racer in racers]
    assert (project / "refunds.log").read_text() == "8\n"  # the command ran exactly once
    assert 0 in codes, outcomes
    for code, (out, err) in zip(codes, outcomes, strict=True):
        assert code == 0 or "approval.consumed" in out + err, (code, out, err)
    shown = json.loads(
        aifr(aifr_bin, project, clean_env, "approvals", "show", approval_id, "--json").stdout
    )
    assert shown["status"] == "consumed"
