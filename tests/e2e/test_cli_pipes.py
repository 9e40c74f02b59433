"""The CLI in pipes, files and narrow terminals: nothing a user copies is ever broken.

Every command here runs as a script runs it: stdout and stderr are pipes and
``COLUMNS=40``. Errors, paths, ids and digests must come out whole on one line, and
tables must print every value whole (no ellipsis), whatever the width.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cli_kit import run_cli

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
name: rotate-the-configuration-of-a-long-named-service
inputs:
  content: {type: string}
steps:
  - id: write
    capability: io.fs.write_file
    inputs: {path: "config/app.conf", content: "{{ inputs.content }}"}
"""


@pytest.fixture
def project(tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]) -> Path:
    root = tmp_path / "a-project-folder-whose-name-is-longer-than-forty-columns"
    subprocess.run([aifr_bin, "init", str(root)], check=True, capture_output=True, env=clean_env)
    (root / "policies" / "default.yaml").write_text(POLICY)
    (root / "workflows" / "rotate.yaml").write_text(WORKFLOW)
    (root / "config").mkdir()
    return root


def test_an_error_naming_a_long_path_is_one_unbroken_line(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    target = project / "no" / "such" / "folder-with-a-long-name" / "export.jsonl"
    result = run_cli(aifr_bin, project, clean_env, "audit", "export", "-o", str(target))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error config.invalid: ")
    assert str(target) in lines[0]


def test_piped_tables_print_every_id_and_name_whole(
    project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    started = run_cli(
        aifr_bin, project, clean_env, "run", "rotate-the-configuration-of-a-long-named-service",
        "--input", "content=new", "--as", "agent", "--json",
    )  # fmt: skip
    assert started.returncode == 4, started.stderr
    run = json.loads(started.stdout)
    approval_id = run["steps"][0]["approval_id"]

    runs = run_cli(aifr_bin, project, clean_env, "runs", "list")
    approvals = run_cli(aifr_bin, project, clean_env, "approvals", "list")
    capabilities = run_cli(aifr_bin, project, clean_env, "capabilities", "list")
    for result in (runs, approvals, capabilities):
        assert result.returncode == 0, result.stderr
        assert "\u2026" not in result.stdout and "..." not in result.stdout
        assert "\x1b[" not in result.stdout  # no colour codes in a pipe
    assert run["id"] in runs.stdout
    assert "rotate-the-configuration-of-a-long-named-service" in runs.stdout
    assert approval_id in approvals.stdout
    assert "io.fs.write_file" in capabilities.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["capabilities", "list"],
        ["workflows", "check"],
        ["mcp", "token", "list"],
        ["runs", "list"],
        ["approvals", "list"],
        ["grants", "list"],
    ],
)
def test_listing_commands_print_json_for_scripts(
    project: Path, aifr_bin: str, clean_env: dict[str, str], command: list[str]
) -> None:
    result = run_cli(aifr_bin, project, clean_env, *command, "--json")
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), list)


def test_help_shows_no_value_for_plain_flags(aifr_bin: str, clean_env: dict[str, str]) -> None:
    for args in (["--help"], ["runs", "list", "--help"], ["audit", "verify", "--help"]):
        shown = subprocess.run(
            [aifr_bin, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**clean_env, "COLUMNS": "100"},
            check=True,
        ).stdout
        assert "<bool>" not in shown, args
        assert "--help" in shown
