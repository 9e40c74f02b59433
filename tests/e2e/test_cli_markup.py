"""Text that agents control is printed as written: never read as Rich markup.

Principals, inputs, paths and error messages reach the terminal from agents. Read as
markup, ``[/x]`` crashed a command with a traceback, and ``[conceal]`` or ``[red]`` in
a principal could change what an approver is shown.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cli_kit import run_cli as _aifr

WORKFLOW = """\
name: copy
steps:
  - id: read
    capability: io.fs.read_file
    inputs: {path: "{{ inputs.src }}"}
inputs:
  src: {type: string}
"""


@pytest.fixture
def project(aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]) -> Path:
    created = subprocess.run(
        [aifr_bin, "init", str(tmp_path / "p")], capture_output=True, text=True, env=clean_env
    )
    assert created.returncode == 0, created.stderr
    (tmp_path / "p" / "workflows" / "copy.yaml").write_text(WORKFLOW)
    return tmp_path / "p"


def test_brackets_in_a_reference_or_an_error_message_are_printed_not_parsed(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    unknown = _aifr(aifr_bin, project, clean_env, "call", "no[/such]")
    failed_run = _aifr(aifr_bin, project, clean_env, "run", "copy", "-i", "src=x[/y]")
    run_id = json.loads(_aifr(aifr_bin, project, clean_env, "runs", "list", "--json").stdout)[0][
        "id"
    ]
    shown = _aifr(aifr_bin, project, clean_env, "runs", "show", run_id)

    for done in (unknown, failed_run, shown):
        assert "Traceback" not in done.stderr, done.stderr
    assert "failed no[/such]" in unknown.stdout
    assert "unknown capability 'no[/such]'" in unknown.stderr
    assert failed_run.returncode == 1
    assert "'x[/y]': No such file or directory" in failed_run.stderr
    assert "at step read: 'x[/y]': No such file or directory" in shown.stderr


def test_markup_in_a_principal_or_inputs_is_shown_to_the_approver_as_written(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    requester = "[conceal]mallory[/conceal]"
    pending = _aifr(
        aifr_bin,
        project,
        clean_env,
        "call",
        "io.fs.delete",
        "path=[red]keep.txt[/red]",
        "--as",
        requester,
    )
    assert pending.returncode == 4, pending.stdout + pending.stderr
    listed = json.loads(_aifr(aifr_bin, project, clean_env, "approvals", "list", "--json").stdout)
    table = _aifr(aifr_bin, project, clean_env, "approvals", "list")
    shown = _aifr(aifr_bin, project, clean_env, "approvals", "show", listed[0]["id"])
    tail = _aifr(aifr_bin, project, clean_env, "audit", "tail")

    assert f"{requester} asks to run io.fs.delete@1" in shown.stdout
    assert "[red]keep.txt[/red]" in shown.stdout
    assert "[conceal]" in table.stdout
    assert requester in tail.stdout
