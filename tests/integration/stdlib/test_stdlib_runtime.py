"""The standard library through the governed runtime of an ``aifr init`` project."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aifr.app import App, build_app
from aifr.config.project import init_project
from aifr.invocation import CallOptions, Status
from aifr.stdlib import build_stdlib
from stdlib_kit import serve_http, snapshot


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
        "io.fs.write_file",
        {"path": "f.txt", "content": "v1"},
        "alice",
        CallOptions(idempotency_key="k1"),
    )
    second = app.runtime.invoke(
        "io.fs.write_file",
        {"path": "f.txt", "content": "v1"},
        "alice",
        CallOptions(idempotency_key="k1"),
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


@pytest.mark.parametrize("path", ["aifr.toml", "policies/default.yaml", "policies/allow-all.yaml"])
def test_an_agent_cannot_rewrite_the_config_or_policies_that_govern_it(app: App, path: str) -> None:
    root = app.settings.project_dir
    before = {p: snapshot(root / p) for p in ("aifr.toml", "policies/default.yaml")}
    for capability_id, inputs in [
        ("io.fs.write_file", {"path": path, "content": "rules: []"}),
        ("io.fs.read_file", {"path": path}),
        ("io.fs.move", {"source": "policies", "destination": "old-policies"}),
        ("io.fs.move", {"source": "aifr.toml", "destination": "old.toml"}),
    ]:
        result = app.runtime.invoke(capability_id, inputs, "alice")
        assert result.status is Status.FAILED, (capability_id, inputs)
        assert result.error is not None and result.error.details["rule"] == "path_reserved"
    assert {p: snapshot(root / p) for p in before} == before
    assert not (root / "policies" / "allow-all.yaml").exists()


CODE_CAPABILITIES = """
import wave  # imported while the project folder is on sys.path

from aifr import capability


@capability("lab.hue", operation="READ", risk="LOW")
def hue() -> str:
    return wave.__name__
"""


@pytest.fixture
def code_project(tmp_path: Path) -> Path:
    project = tmp_path / "coded"
    init_project(project)
    (project / "hue_caps.py").write_text(CODE_CAPABILITIES)
    (project / "huepkg").mkdir()
    (project / "huepkg" / "__init__.py").write_text("")
    (project / "huepkg" / "more.py").write_text("")
    config = project / "aifr.toml"
    config.write_text(
        config.read_text().replace(
            "capability_modules = []", 'capability_modules = ["hue_caps", "huepkg.more"]'
        )
    )
    return project


@pytest.mark.parametrize(
    "path",
    [
        "hue_caps.py",
        "huepkg/__init__.py",
        "huepkg/more.py",
        "__pycache__/hue_caps.cpython-311.pyc",
        "workflows/evil.yaml",
        ".aifr/secrets/API_TOKEN",
        ".aifr/keys/audit-ed25519.pem",
    ],
)
def test_an_agent_cannot_rewrite_the_code_workflows_or_secrets_aifr_loads(
    code_project: Path, path: str
) -> None:
    app = build_app(code_project, require_project=True)
    try:
        result = app.runtime.invoke("io.fs.write_file", {"path": path, "content": "x"}, "alice")
    finally:
        app.close()

    assert result.status is Status.FAILED
    assert result.error is not None and result.error.details["rule"] == "path_reserved"
    assert (code_project / "hue_caps.py").read_text() == CODE_CAPABILITIES


def test_a_module_an_agent_writes_into_the_project_does_not_shadow_an_installed_one(
    code_project: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    app = build_app(code_project, require_project=True)
    try:
        planted = "open('PWNED', 'w').close()\nraise SystemExit('shadowed')\n"
        written = app.runtime.invoke(
            "io.fs.write_file", {"path": "wave.py", "content": planted}, "alice"
        )
    finally:
        app.close()
    assert written.status is Status.OK, written.error

    listed = subprocess.run(
        [aifr_bin, "call", "lab.hue", "-p", str(code_project)],
        capture_output=True, text=True, env=clean_env, cwd=code_project, check=False,
    )  # fmt: skip

    assert listed.returncode == 0, listed.stderr
    assert not (code_project / "PWNED").exists()


def test_high_risk_exec_waits_for_an_approval_under_the_default_policy(app: App) -> None:
    result = app.runtime.invoke("sys.exec", {"argv": ["echo", "hi"]}, "alice")
    assert result.status is Status.PENDING_APPROVAL
    assert result.approval_id


def test_reads_are_allowed_and_return_json(app: App) -> None:
    result = app.runtime.invoke("data.json.parse", {"text": json.dumps({"a": 1})}, "alice")
    assert result.status is Status.OK
    assert result.output == {"value": {"a": 1}}


_ALLOW_CI = """  - id: ci-runs-the-stdlib
    when: {principal: ci}
    decision: ALLOW
    reason: the test principal may run every standard capability
"""


@pytest.fixture
def open_app(tmp_path: Path, clean_env: dict[str, str]) -> Iterator[tuple[App, str]]:
    """An init project whose policy lets ``ci`` run anything, with a local HTTP server."""
    project = tmp_path / "proj"
    init_project(project)
    policy = project / "policies" / "default.yaml"
    policy.write_text(policy.read_text().replace("rules:\n", "rules:\n" + _ALLOW_CI, 1))
    config = project / "aifr.toml"
    config.write_text(
        config.read_text()
        .replace("allow_commands = []", 'allow_commands = ["echo"]')
        .replace(
            "allow_hosts = []",
            'allow_hosts = ["127.0.0.1"]\nallow_schemes = ["http"]\nallow_private_addresses = true',
        )
    )
    (project / "f.txt").write_text("one")
    (project / "g.txt").write_text("two")
    with serve_http() as base:
        built = build_app(project, require_project=True)
        yield built, base
        built.close()


def _restore_input(app: App, _: str) -> dict[str, Any]:
    written = app.runtime.invoke("io.fs.write_file", {"path": "r.txt", "content": "r"}, "ci")
    assert isinstance(written.output, dict)
    return dict(written.output["undo"])


CASES: dict[str, Callable[[App, str], dict[str, Any]]] = {
    "io.fs.read_file": lambda app, base: {"path": "f.txt"},
    "io.fs.list_dir": lambda app, base: {"path": "."},
    "io.fs.stat": lambda app, base: {"path": "f.txt"},
    "io.fs.write_file": lambda app, base: {"path": "notes/a.txt", "content": "hi"},
    "io.fs.move": lambda app, base: {"source": "g.txt", "destination": "h.txt"},
    "io.fs.delete": lambda app, base: {"path": "f.txt"},
    "io.fs.restore": _restore_input,
    "io.net.http_get": lambda app, base: {"url": f"{base}/ok"},
    "io.net.http_request": lambda app, base: {"url": f"{base}/echo", "method": "POST"},
    "data.json.parse": lambda app, base: {"text": "[1, 2]"},
    "data.csv.parse": lambda app, base: {"text": "a,b\n1,2\n"},
    "data.query": lambda app, base: {"data": {"a": [1, 2]}, "expression": "a[1]"},
    "data.transform": lambda app, base: {"data": {"a": 1}, "mapping": {"b": "a"}},
    "sys.exec": lambda app, base: {"argv": ["echo", "hi"]},
    "sys.env.read": lambda app, base: {"prefix": "AIFR_"},
}


def test_the_cases_cover_every_standard_capability(tmp_path: Path) -> None:
    built = build_stdlib(project_dir=tmp_path, state_dir=tmp_path / ".aifr")
    assert set(CASES) == {item.id for item in built}


@pytest.mark.parametrize("capability_id", sorted(CASES))
def test_every_standard_capability_runs_through_runtime_invoke(
    open_app: tuple[App, str], capability_id: str
) -> None:
    app, base = open_app
    inputs = CASES[capability_id](app, base)
    result = app.runtime.invoke(capability_id, inputs, "ci")
    assert result.status is Status.OK, result.error
    assert result.audit_id is not None
    assert app.ledger.verify().ok


ALIAS_PROBE = """
import json, sys
from aifr.app import build_app

app = build_app(sys.argv[1], require_project=True)
out = {}
for path in sys.argv[2:]:
    result = app.runtime.invoke("io.fs.write_file", {"path": path, "content": "rules: []"}, "alice")
    out[path] = result.error.details.get("rule") if result.error else "written"
app.close()
print(json.dumps(out))
"""


def test_reserved_folders_are_refused_under_another_spelling_of_the_same_folder(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    """``POLICIES/`` and ``.AIFR/`` reach the reserved folders on a case-insensitive disk.

    The host's filesystem may be case-sensitive, so the test builds the same situation
    anywhere: in a private mount namespace, ``POLICIES`` and ``.AIFR`` are bind mounts of
    ``policies`` and ``.aifr``, two spellings of one folder, as macOS and Windows give.
    """
    project = tmp_path / "proj"
    init_project(project)
    build_app(project, require_project=True).close()  # creates .aifr/
    for alias in ("POLICIES", ".AIFR"):
        (project / alias).mkdir()
    mounts = (
        'mount --bind "$1/policies" "$1/POLICIES" && mount --bind "$1/.aifr" "$1/.AIFR" '
        '|| exit 97; shift; exec "$@"'
    )
    probe = subprocess.run(  # a private namespace: the mounts vanish with the process
        [
            "unshare",
            "-Urm",
            "sh",
            "-c",
            mounts,
            "sh",
            str(project),
            sys.executable,
            "-c",
            ALIAS_PROBE,
            str(project),
            "POLICIES/x.yaml",
            ".AIFR/aifr.db",
            "POLICIES/default.yaml",
            "notes/fine.txt",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if probe.returncode == 97 or ("unshare" in probe.stderr and probe.returncode != 0):
        pytest.skip(f"bind mounts in a private namespace are not permitted here: {probe.stderr}")
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == {
        "POLICIES/x.yaml": "path_reserved",
        ".AIFR/aifr.db": "path_reserved",
        "POLICIES/default.yaml": "path_reserved",
        "notes/fine.txt": "written",
    }
    assert not (project / "policies" / "x.yaml").exists()
    assert (project / "policies" / "default.yaml").read_text() != "rules: []"
