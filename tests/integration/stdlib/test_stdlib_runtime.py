"""The standard library through the governed runtime of an ``aifr init`` project."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from aifr.app import App, build_app
from aifr.config.project import init_project
from aifr.invocation import Status
from stdlib_kit import snapshot


@pytest.fixture
def app(tmp_path: Path, clean_env: dict[str, str]) -> Iterator[App]:
    project = tmp_path / "proj"
    init_project(project)
    config = project / "aifr.toml"
    config.write_text(
        config.read_text().replace("allow_commands = []", 'allow_commands = ["echo"]')
    )
    built = build_app(project, require_project=True)
    yield built
    built.close()


def test_a_write_and_its_compensation_run_through_the_runtime_and_the_audit_ledger(
    app: App,
) -> None:
    root = app.settings.project_dir
    written = app.runtime.invoke(
        "io.fs.write_file", {"path": "notes/a.txt", "content": "hi"}, "alice"
    )
    assert written.status is Status.OK, written.error
    assert (root / "notes" / "a.txt").read_text() == "hi"
    spec = app.registry.get("io.fs.write_file")
    assert spec is not None and spec.compensation.capability_id == "io.fs.restore"
    assert isinstance(written.output, dict)
    undone = app.runtime.invoke(spec.compensation.capability_id, written.output["undo"], "alice")
    assert undone.status is Status.OK, undone.error
    assert not (root / "notes").exists()
    assert app.ledger.verify().ok


def test_a_repeated_key_through_the_runtime_writes_once(app: App) -> None:
    root = app.settings.project_dir
    (root / "f.txt").write_text("original")
    original = snapshot(root / "f.txt")
    first = app.runtime.invoke(
        "io.fs.write_file", {"path": "f.txt", "content": "v1"}, "alice", idempotency_key="k1"
    )
    second = app.runtime.invoke(
        "io.fs.write_file", {"path": "f.txt", "content": "v1"}, "alice", idempotency_key="k1"
    )
    assert first.output == second.output
    assert second.replayed
    assert isinstance(first.output, dict)
    app.runtime.invoke("io.fs.restore", first.output["undo"], "alice")
    assert snapshot(root / "f.txt") == original


def test_a_refusal_is_a_failed_result_naming_the_rule(app: App) -> None:
    result = app.runtime.invoke("io.fs.read_file", {"path": "../../etc/passwd"}, "alice")
    assert result.status is Status.FAILED
    assert result.error is not None
    assert result.error.code.value == "execution.refused"
    assert result.error.details["rule"] == "path_outside_root"


def test_high_risk_exec_waits_for_an_approval_under_the_default_policy(app: App) -> None:
    result = app.runtime.invoke("sys.exec", {"argv": ["echo", "hi"]}, "alice")
    assert result.status is Status.PENDING_APPROVAL
    assert result.approval_id


def test_reads_are_allowed_and_return_json(app: App) -> None:
    result = app.runtime.invoke("data.json.parse", {"text": json.dumps({"a": 1})}, "alice")
    assert result.status is Status.OK
    assert result.output == {"value": {"a": 1}}
