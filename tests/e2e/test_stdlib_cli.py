"""The standard library from the command line, as the issue's acceptance line runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def run(
    aifr_bin: str, *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [aifr_bin, *args],
        cwd=cwd,
        env={**env, "COLUMNS": "40"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_aifr_call_write_file_as_alice_writes_and_restore_undoes_it(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = tmp_path / "proj"
    assert run(aifr_bin, "init", str(project), cwd=tmp_path, env=clean_env).returncode == 0
    written = run(
        aifr_bin,
        "call",
        "io.fs.write_file",
        "path=notes/a.txt",
        "content=hi",
        "--as",
        "alice",
        cwd=project,
        env=clean_env,
    )
    assert written.returncode == 0, written.stderr
    assert "ok io.fs.write_file" in written.stdout
    assert (project / "notes" / "a.txt").read_text() == "hi"

    again = run(
        aifr_bin, "call", "io.fs.write_file", "path=notes/a.txt", "content=bye", "--as", "alice", "--json",
        cwd=project, env=clean_env,
    )  # fmt: skip
    token = json.loads(again.stdout)["output"]["undo"]["token"]
    assert (project / "notes" / "a.txt").read_text() == "bye"
    restored = run(
        aifr_bin,
        "call",
        "io.fs.restore",
        f"token={token}",
        "--as",
        "alice",
        cwd=project,
        env=clean_env,
    )
    assert restored.returncode == 0, restored.stderr
    assert (project / "notes" / "a.txt").read_text() == "hi"


def test_a_traversal_from_the_cli_is_refused_with_the_denied_exit_status(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = tmp_path / "proj"
    assert run(aifr_bin, "init", str(project), cwd=tmp_path, env=clean_env).returncode == 0
    result = run(
        aifr_bin, "call", "io.fs.write_file", "path=../escape.txt", "content=x", "--as", "alice", "--json",
        cwd=project, env=clean_env,
    )  # fmt: skip
    assert result.returncode == 1
    payload = json.loads(result.stdout)
    assert payload["error"]["details"]["rule"] == "path_outside_root"
    assert not (tmp_path / "escape.txt").exists()
