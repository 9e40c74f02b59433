"""``[approvals] require_authenticated``: a decision needs a proven approver, in the CLI too."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from api_harness import make_project, mint, run_aifr


@pytest.fixture
def project(aifr_bin: str, tmp_path: Path, api_env: dict[str, str]) -> Path:
    return make_project(aifr_bin, tmp_path, api_env)


def _require(project: Path) -> None:
    config = project / "aifr.toml"
    config.write_text(
        config.read_text().replace("# require_authenticated = true", "require_authenticated = true")
    )


def _pending(aifr_bin: str, project: Path, env: dict[str, str], order: int) -> str:
    called = run_aifr(
        aifr_bin,
        "call",
        "shop.refund",
        f"order_id={order}",
        "amount=2",
        "--as",
        "agent",
        "--json",
        "-p",
        str(project),
        cwd=project,
        env=env,
    )
    approval_id = json.loads(called.stdout)["approval_id"]
    assert isinstance(approval_id, str), called.stdout
    return approval_id


def _approve(
    aifr_bin: str, project: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return run_aifr(
        aifr_bin, "approvals", "approve", *args, "-p", str(project), cwd=project, env=env
    )


def test_aifr_init_writes_the_setting_commented_with_its_reason(project: Path) -> None:
    text = (project / "aifr.toml").read_text()
    assert "# require_authenticated = true" in text
    assert "--as bob" in text


def test_a_bare_as_is_refused_and_audited_when_authentication_is_required(
    aifr_bin: str, project: Path, api_env: dict[str, str]
) -> None:
    _require(project)
    approval_id = _pending(aifr_bin, project, api_env, 1)
    refused = _approve(aifr_bin, project, api_env, approval_id, "--as", "alice")
    assert refused.returncode == 3, refused.stderr
    assert "approval.unauthenticated" in refused.stderr
    assert "--token" in " ".join(refused.stderr.split())
    shown = run_aifr(
        aifr_bin,
        "approvals",
        "show",
        approval_id,
        "--json",
        "-p",
        str(project),
        cwd=project,
        env=api_env,
    )
    assert json.loads(shown.stdout)["status"] == "pending"
    exported = run_aifr(aifr_bin, "audit", "export", "-p", str(project), cwd=project, env=api_env)
    refusals = [
        r for r in map(json.loads, exported.stdout.splitlines()) if r["kind"] == "approval.refused"
    ]
    assert [(r["principal"], r["outcome"], r["details"]["reason"]) for r in refusals] == [
        ("alice", "denied", "unauthenticated")
    ]


def test_the_approvers_token_decides_from_the_cli_flag_or_environment(
    aifr_bin: str, project: Path, api_env: dict[str, str]
) -> None:
    _require(project)
    alice = mint(aifr_bin, project, api_env, "alice")
    first = _pending(aifr_bin, project, api_env, 2)
    done = _approve(aifr_bin, project, api_env, first, "--token", alice)
    assert done.returncode == 0, done.stderr
    second = _pending(aifr_bin, project, api_env, 3)
    by_env = run_aifr(
        aifr_bin,
        "approvals",
        "reject",
        second,
        "-p",
        str(project),
        cwd=project,
        env={**api_env, "AIFR_TOKEN": alice},
    )
    assert by_env.returncode == 0, by_env.stderr
    shown = run_aifr(
        aifr_bin, "approvals", "show", first, "--json", "-p", str(project), cwd=project, env=api_env
    )
    assert json.loads(shown.stdout)["decided_by"] == "alice"


def test_a_token_cannot_be_used_under_another_name_or_by_the_requester(
    aifr_bin: str, project: Path, api_env: dict[str, str]
) -> None:
    _require(project)
    alice = mint(aifr_bin, project, api_env, "alice")
    agent = mint(aifr_bin, project, api_env, "agent")
    approval_id = _pending(aifr_bin, project, api_env, 4)
    other_name = _approve(aifr_bin, project, api_env, approval_id, "--token", alice, "--as", "bob")
    assert "approval.unauthenticated" in other_name.stderr
    own = _approve(aifr_bin, project, api_env, approval_id, "--token", agent)
    assert "approval.self_approval" in own.stderr
    forged = _approve(aifr_bin, project, api_env, approval_id, "--token", "aifr_forged")
    assert "approval.unauthenticated" in forged.stderr


def test_without_the_setting_a_bare_as_still_decides(
    aifr_bin: str, project: Path, api_env: dict[str, str]
) -> None:
    approval_id = _pending(aifr_bin, project, api_env, 5)
    done = _approve(aifr_bin, project, api_env, approval_id, "--as", "alice")
    assert done.returncode == 0, done.stderr
