"""Tracing switched on by ``OTEL_TRACES_EXPORTER`` for a command a user runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.e2e.cli_kit import run_cli


def _project(tmp_path: Path, aifr_bin: str, env: dict[str, str]) -> Path:
    root = tmp_path / "proj"
    done = subprocess.run(
        [aifr_bin, "init", str(root)], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    (root / "note.txt").write_text("hello\n", encoding="utf-8")
    return root


def test_the_console_exporter_writes_spans_to_stderr_under_the_audit_trace_id(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    project = _project(tmp_path, aifr_bin, clean_env)
    env = {**clean_env, "OTEL_TRACES_EXPORTER": "console"}
    done = run_cli(aifr_bin, project, env, "call", "io.fs.read_file", "path=note.txt", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # stdout stays the command's own output
    spans = [json.loads(line) for line in done.stderr.splitlines() if line.startswith('{"name"')]
    names = {span["name"] for span in spans}
    assert names == {"aifr.invoke", "aifr.policy.decide"}
    assert {span["context"]["trace_id"] for span in spans} == {f"0x{result['trace_id']}"}
    tail = run_cli(aifr_bin, project, clean_env, "audit", "tail", "--json")
    assert json.loads(tail.stdout.splitlines()[-1])["trace_id"] == result["trace_id"]


def test_an_unknown_exporter_is_a_configuration_error_naming_the_variable(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    project = _project(tmp_path, aifr_bin, clean_env)
    env = {**clean_env, "OTEL_TRACES_EXPORTER": "carrier-pigeon"}
    done = run_cli(aifr_bin, project, env, "call", "io.fs.read_file", "path=note.txt")
    assert done.returncode == 2
    assert "OTEL_TRACES_EXPORTER" in done.stderr
