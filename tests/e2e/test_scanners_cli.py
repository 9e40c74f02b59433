"""``scan.*`` capabilities run through ``aifr call`` with a fake scanner binary on PATH (a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

SAMPLE = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "samples"
    / "scanners"
    / "nuclei"
    / "nuclei-v3.jsonl"
)
ALLOW_SCANS = """\
version: 1
rules:
  - id: allow-nuclei-for-alice
    when: {capability: scan.nuclei, principal: alice}
    decision: ALLOW
    reason: alice runs the weekly scan
"""


def run(
    aifr_bin: str, *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [aifr_bin, *args],
        cwd=cwd,
        env={**env, "COLUMNS": "40"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def project(tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]) -> Path:
    root = tmp_path / "proj"
    assert run(aifr_bin, "init", str(root), cwd=tmp_path, env=clean_env).returncode == 0
    (root / "policies" / "00-scans.yaml").write_text(ALLOW_SCANS)
    return root


@pytest.fixture
def fake_path(tmp_path: Path, clean_env: dict[str, str]) -> dict[str, str]:
    """PATH with a fake ``nuclei`` that records its argv and writes the sample to its ``-o`` file.

    The sample is in the script itself: a scanner reads only its scans folder, the system
    folders and its own binary.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nuclei"
    script.write_text(
        "#!/bin/sh\n"
        'echo "$@" > argv.txt\n'
        'out=""\n'
        'while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out="$2"; shift; done\n'
        "cat > \"$out\" <<'AIFR_SAMPLE'\n"
        f"{SAMPLE.read_text(encoding='utf-8').rstrip()}\n"
        "AIFR_SAMPLE\n"
    )
    script.chmod(0o755)
    return {**clean_env, "PATH": f"{bin_dir}{os.pathsep}{clean_env.get('PATH', '')}"}


def scan(
    aifr_bin: str, project: Path, env: dict[str, str], target: str, who: str = "alice"
) -> subprocess.CompletedProcess[str]:
    return run(
        aifr_bin, "call", "scan.nuclei", "project=acme", f'targets=["{target}"]', "--as", who, "--json",
        cwd=project, env=env,
    )  # fmt: skip


def test_an_allowed_scan_of_a_registered_target_runs_the_binary_and_imports_its_findings(
    aifr_bin: str, project: Path, fake_path: dict[str, str]
) -> None:
    added = run(
        aifr_bin,
        "resources",
        "add",
        "https://shop.example.test",
        "--project",
        "acme",
        cwd=project,
        env=fake_path,
    )
    assert added.returncode == 0, added.stderr
    done = scan(aifr_bin, project, fake_path, "https://shop.example.test/")
    assert done.returncode == 0, done.stderr + done.stdout
    output = json.loads(done.stdout)["output"]
    assert output["scanner"] == "nuclei" and output["imported"] > 0 and output["exit_code"] == 0
    argv = (project / ".aifr" / "scans" / "argv.txt").read_text()
    assert "-u https://shop.example.test/" in argv and "-jsonl" in argv
    listed = run(
        aifr_bin,
        "findings",
        "list",
        "--project",
        "acme",
        "--run",
        output["run"],
        "--json",
        cwd=project,
        env=fake_path,
    )
    assert len(json.loads(listed.stdout)["findings"]) == output["imported"]


def test_a_target_that_is_not_a_registered_resource_is_refused_before_anything_runs(
    aifr_bin: str, project: Path, fake_path: dict[str, str]
) -> None:
    run(
        aifr_bin,
        "resources",
        "add",
        "https://shop.example.test",
        "--project",
        "acme",
        cwd=project,
        env=fake_path,
    )
    done = scan(aifr_bin, project, fake_path, "https://evil.example.net/")
    assert done.returncode != 0
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "findings.target_not_registered"
    assert "aifr resources add" in error["message"]
    assert not (project / ".aifr" / "scans" / "argv.txt").exists()


def test_a_missing_scanner_binary_says_how_to_import_a_file_instead(
    aifr_bin: str, project: Path, clean_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**clean_env, "PATH": str(tmp_path / "empty")}
    run(
        aifr_bin, "resources", "add", "shop.example.test", "--project", "acme", cwd=project, env=env
    )
    done = scan(aifr_bin, project, env, "shop.example.test")
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "findings.scanner_missing"
    assert "aifr findings import FILE --scanner nuclei" in error["message"]


def test_a_scan_without_an_explicit_allow_waits_for_approval(
    aifr_bin: str, project: Path, fake_path: dict[str, str]
) -> None:
    run(
        aifr_bin,
        "resources",
        "add",
        "shop.example.test",
        "--project",
        "acme",
        cwd=project,
        env=fake_path,
    )
    done = scan(aifr_bin, project, fake_path, "shop.example.test", who="mallory")
    assert done.returncode == 4
    assert json.loads(done.stdout)["status"] == "pending_approval"
    assert not (project / ".aifr" / "scans" / "argv.txt").exists()


def test_a_run_id_that_would_move_the_output_file_out_of_the_scans_folder_is_refused(
    aifr_bin: str, project: Path, fake_path: dict[str, str]
) -> None:
    run(
        aifr_bin,
        "resources",
        "add",
        "shop.example.test",
        "--project",
        "acme",
        cwd=project,
        env=fake_path,
    )
    done = run(
        aifr_bin, "call", "scan.nuclei", "project=acme", 'targets=["shop.example.test"]', "run=../../escape",
        "--as", "alice", "--json", cwd=project, env=fake_path,
    )  # fmt: skip
    assert json.loads(done.stdout)["error"]["code"] == "input.invalid"
    assert not (project / ".aifr" / "scans" / "argv.txt").exists()
    assert not list(project.parent.glob("*escape*"))
