"""``aifr sandbox status`` and a sandboxed ``sys.exec`` through ``aifr call``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_kit import run_cli

from aifr.invocation.sandbox_backends import detect


def _project(aifr_bin: str, tmp_path: Path, env: dict[str, str], sandbox: str) -> Path:
    project = tmp_path / "proj"
    subprocess.run([aifr_bin, "init", str(project)], check=True, capture_output=True, env=env)
    config = project / "aifr.toml"
    text = config.read_text().replace("allow_commands = []", 'allow_commands = ["cat"]')
    config.write_text(text.replace('sandbox = "auto"', f'sandbox = "{sandbox}"', 1))
    return project


def test_sandbox_status_reports_the_backend_and_the_hidden_paths(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = _project(aifr_bin, tmp_path, clean_env, "auto")
    shown = run_cli(aifr_bin, project, clean_env, "sandbox", "status", "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["mode"] == "auto"
    assert report["backend"] == detect("auto").backend
    assert str(project.resolve() / ".aifr") in report["hidden"]
    assert str(project.resolve() / "policies") in report["hidden"]
    assert report["write_roots"] == [str(project.resolve())]


def test_an_agent_command_cannot_read_the_policies_through_aifr_call(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    if detect("auto").backend == "none":
        pytest.skip("neither Landlock nor bubblewrap is available here")
    project = _project(aifr_bin, tmp_path, clean_env, "auto")
    policy = project / "policies" / "default.yaml"
    policy.write_text(
        policy.read_text().replace(
            "rules:\n",
            "rules:\n  - id: allow-exec\n    when: {capability: sys.exec}\n    decision: ALLOW\n",
            1,
        )
    )
    called = run_cli(
        aifr_bin, project, clean_env, "call", "sys.exec",
        'argv=["cat", "policies/default.yaml"]', "--as", "alice", "--json",
    )  # fmt: skip
    out = json.loads(called.stdout)["output"]
    assert out["exit_code"] != 0
    assert "allow-exec" not in out["stdout"]
    assert out["refused"]["paths"] == [str(policy.resolve())]


_WITHOUT_NAMESPACES = r"""
import ctypes, os, sys
from aifr.invocation import seccomp

class Prog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

bpf = seccomp.filter_program(network=False)
buffer = ctypes.create_string_buffer(bpf, len(bpf))
prog = Prog(len(bpf) // 8, ctypes.cast(buffer, ctypes.c_void_p))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0 and libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_doctor_reports_the_backend_and_fails_when_the_configured_one_is_missing(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = _project(aifr_bin, tmp_path, clean_env, "auto")
    done = run_cli(aifr_bin, project, clean_env, "doctor", "--json")
    rows = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    row = rows["process sandbox"]
    backend = detect("auto").backend
    assert row["ok"] is True
    assert str(row["detail"]).startswith(f"{backend} (configured: auto")
    if detect("bubblewrap").bwrap is None:
        return
    # where namespaces are denied (aifr's own seccomp filter, as many hosts do), a
    # configured bubblewrap is missing: doctor fails its row
    config = project / "aifr.toml"
    config.write_text(config.read_text().replace('sandbox = "auto"', 'sandbox = "bubblewrap"'))
    refused = subprocess.run(
        [
            sys.executable,
            "-c",
            _WITHOUT_NAMESPACES,
            aifr_bin,
            "doctor",
            "--json",
            "-p",
            str(project),
        ],
        capture_output=True,
        text=True,
        env=clean_env,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 1, refused.stderr
    row = {c["name"]: c for c in json.loads(refused.stdout)["checks"]}["process sandbox"]
    assert row["ok"] is False and "unavailable" in str(row["detail"])
