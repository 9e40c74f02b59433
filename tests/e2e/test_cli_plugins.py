"""The sample plugin as a user gets it: ``pip install``, enable, list, call; and its limits.

``plugins/aifr-sample`` is installed with pip into a folder of its own (put on
``PYTHONPATH`` only for these commands, so no other test sees it) and found through its
real entry point. Throwaway plugins that relay a call to ``io.net`` or ``sys.exec`` show
that a permission the manifest did not ask for is refused at run time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plugin_kit import (
    ASYNC_CALLING_PLUGIN,
    CALLING_PLUGIN,
    aifr,
    call_json,
    listing,
    make_project,
    manifest,
)
from plugin_kit import write_plugin as install
from stdlib_kit import serve_http

SAMPLE = Path(__file__).resolve().parents[2] / "plugins" / "aifr-sample"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AIFR_")}


@pytest.fixture(scope="module")
def sample_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample plugin installed by pip (no dependencies: aifr is already here)."""
    site = tmp_path_factory.mktemp("sample-site")
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    argv += ["--no-build-isolation", "--no-index", "--target", str(site), str(SAMPLE)]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (site / "aifr_sample" / "aifr-plugin.json").is_file()
    return site


@pytest.fixture(scope="module")
def sample_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = make_project(tmp_path_factory.mktemp("sample") / "p", enabled=["aifr-sample"])
    (project / "notes").mkdir()
    (project / "notes" / "todo.txt").write_text("buy milk\nwrite tests\n")
    (project / "private.txt").write_text("not for plugins\n")
    return project


def test_the_installed_sample_plugin_is_listed_as_loaded(
    aifr_bin: str, sample_site: Path, sample_project: Path
) -> None:
    entry = listing(aifr_bin, sample_project, _env(), sample_site)["aifr-sample"]
    assert entry["state"] == "loaded"
    assert entry["version"] == "0.1.0"
    assert entry["capabilities"] == ["sample.greet", "sample.count_lines"]
    assert entry["manifest"]["permissions"]["fs_roots"] == ["notes"]
    assert entry["distribution"] == "aifr-sample"
    table = aifr(aifr_bin, sample_project, _env(), sample_site, "plugins", "list")
    assert table.returncode == 0 and "aifr-sample" in table.stdout and "loaded" in table.stdout


def test_the_sample_capabilities_are_registered_with_their_risk(
    aifr_bin: str, sample_site: Path, sample_project: Path
) -> None:
    done = aifr(aifr_bin, sample_project, _env(), sample_site, "capabilities", "list")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[1]: line for line in done.stdout.splitlines() if "sample." in line}
    assert set(rows) == {"sample.greet", "sample.count_lines"}
    assert all("READ" in row and "LOW" in row for row in rows.values())


def test_calling_the_sample_plugin_goes_through_the_governed_path(
    aifr_bin: str, sample_site: Path, sample_project: Path
) -> None:
    status, greeted = call_json(
        aifr_bin, sample_project, _env(), sample_site, "sample.greet", "name=Ada"
    )
    assert status == 0 and greeted["output"] == {"greeting": "Hello, Ada!"}
    status, counted = call_json(
        aifr_bin, sample_project, _env(), sample_site, "sample.count_lines", "path=notes/todo.txt"
    )
    assert status == 0, counted
    assert counted["output"] == {"path": "notes/todo.txt", "lines": 2, "words": 4}
    records = _audit(aifr_bin, sample_project, sample_site)
    nested = [r for r in records if r["capability_id"] == "io.fs.read_file"]
    assert nested[-1]["principal"] == "plugin:aifr-sample"
    assert nested[-1]["outcome"] == "ok"


def test_the_sample_plugin_cannot_read_outside_the_root_it_asked_for(
    aifr_bin: str, sample_site: Path, sample_project: Path
) -> None:
    status, result = call_json(
        aifr_bin, sample_project, _env(), sample_site, "sample.count_lines", "path=private.txt"
    )
    assert status == 1
    assert result["error"]["code"] == "plugin.permission_denied"
    assert result["error"]["details"]["permission"] == "fs_roots"
    assert "not for plugins" not in json.dumps(result)


def test_acting_as_a_plugin_principal_is_narrowed_even_outside_the_plugin(
    aifr_bin: str, sample_site: Path, sample_project: Path
) -> None:
    # An approved request is re-run later by the runtime, not by the plugin: the
    # narrowing follows the principal, so it holds there too.
    status, result = call_json(
        aifr_bin, sample_project, _env(), sample_site,
        "io.fs.read_file", "path=private.txt", "--as", "plugin:aifr-sample",
    )  # fmt: skip
    assert status == 1 and result["error"]["code"] == "plugin.permission_denied"
    status, result = call_json(
        aifr_bin, sample_project, _env(), sample_site,
        "io.fs.read_file", "path=notes/todo.txt", "--as", "plugin:not-installed",
    )  # fmt: skip
    assert status == 1 and result["error"]["code"] == "plugin.permission_denied"


def _audit(aifr_bin: str, project: Path, site: Path) -> list[dict[str, Any]]:
    done = aifr(aifr_bin, project, _env(), site, "audit", "export")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


# -- io.net and sys.exec: relays that ask for less than they try -------------------------

RELAYS: dict[str, dict[str, list[str]]] = {
    "netless": {},
    "netpicky": {"hosts": ["elsewhere.example"]},
    "netok": {"hosts": ["127.0.0.1"]},
    "execless": {"fs_roots": ["."]},
    "execpicky": {"commands": ["echo"], "fs_roots": ["."]},
    "fsless": {"hosts": ["127.0.0.1"]},
    "asyncfs": {"fs_roots": ["notes"]},
}

POLICY = """\
version: 1
rules:
  - id: allow-exec
    when:
      capability: sys.exec
    decision: ALLOW
    reason: the tests run echo and true
  - id: allow-rest
    when:
      capability: "*"
    decision: ALLOW
    reason: tests
"""


@pytest.fixture(scope="module")
def relays(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("relays")
    site = root / "site"
    for name, permissions in RELAYS.items():
        install(
            site,
            name,
            code=(ASYNC_CALLING_PLUGIN if name.startswith("async") else CALLING_PLUGIN).format(
                cap=f"{name}.relay"
            ),
            plugin_manifest=manifest(name, [f"{name}.relay"], **permissions),
        )
    project = make_project(root / "p", enabled=["*"])
    toml = (project / "aifr.toml").read_text()
    toml = toml.replace("[net]\nallow_hosts = []", '[net]\nallow_hosts = ["127.0.0.1"]\n'
                        'allow_schemes = ["http"]\nallow_private_addresses = true')  # fmt: skip
    toml = toml.replace("[exec]\nallow_commands = []", '[exec]\nallow_commands = ["echo", "true"]')
    (project / "aifr.toml").write_text(toml)
    (project / "policies" / "default.yaml").write_text(POLICY)
    (project / "notes").mkdir()
    (project / "notes" / "n.txt").write_text("note\n")
    (project / "top.txt").write_text("top\n")
    return site, project


@pytest.fixture
def server() -> Iterator[str]:
    with serve_http() as url:
        yield url


def _relay(
    aifr_bin: str, relays: tuple[Path, Path], plugin: str, ref: str, inputs: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    site, project = relays
    request = project / f"{plugin}-request.json"
    request.write_text(json.dumps({"ref": ref, "inputs": inputs}))
    return call_json(
        aifr_bin, project, _env(), site, f"{plugin}.relay", "--input-file", str(request)
    )


def test_a_plugin_that_asked_for_no_hosts_cannot_reach_io_net(
    aifr_bin: str, relays: tuple[Path, Path], server: str
) -> None:
    status, result = _relay(aifr_bin, relays, "netless", "io.net.http_get", {"url": f"{server}/ok"})
    assert status == 1
    assert result["error"]["code"] == "plugin.permission_denied"
    assert result["error"]["details"]["permission"] == "hosts"


def test_a_plugin_reaches_only_the_hosts_it_asked_for(
    aifr_bin: str, relays: tuple[Path, Path], server: str
) -> None:
    status, result = _relay(
        aifr_bin, relays, "netpicky", "io.net.http_get", {"url": f"{server}/ok"}
    )
    assert status == 1
    assert result["error"]["code"] == "plugin.permission_denied"
    assert result["error"]["details"]["host"] == "127.0.0.1"
    status, result = _relay(aifr_bin, relays, "netok", "io.net.http_get", {"url": f"{server}/ok"})
    assert status == 0, result
    assert result["output"]["output"]["status"] == 200


def test_a_plugin_runs_only_the_commands_it_asked_for(
    aifr_bin: str, relays: tuple[Path, Path]
) -> None:
    status, result = _relay(aifr_bin, relays, "execless", "sys.exec", {"argv": ["echo", "hi"]})
    assert status == 1 and result["error"]["details"]["permission"] == "commands"
    status, result = _relay(aifr_bin, relays, "execpicky", "sys.exec", {"argv": ["true"]})
    assert status == 1
    assert result["error"]["code"] == "plugin.permission_denied"
    assert result["error"]["details"]["command"] == "true"
    status, result = _relay(aifr_bin, relays, "execpicky", "sys.exec", {"argv": ["echo", "hi"]})
    assert status == 0, result
    assert result["output"]["output"]["stdout"] == "hi\n"


def test_a_plugin_without_fs_roots_cannot_use_io_fs_nor_other_capabilities(
    aifr_bin: str, relays: tuple[Path, Path]
) -> None:
    status, result = _relay(aifr_bin, relays, "fsless", "io.fs.read_file", {"path": "top.txt"})
    assert status == 1 and result["error"]["details"]["permission"] == "fs_roots"
    status, result = _relay(aifr_bin, relays, "fsless", "sys.env.read", {})
    assert status == 1 and result["error"]["details"]["permission"] == "capabilities"
    status, result = _relay(aifr_bin, relays, "fsless", "netok.relay", {"ref": "x", "inputs": {}})
    assert status == 1 and result["error"]["details"]["permission"] == "capabilities"


def test_an_async_plugin_handler_is_narrowed_the_same_way(
    aifr_bin: str, relays: tuple[Path, Path]
) -> None:
    status, result = _relay(aifr_bin, relays, "asyncfs", "io.fs.read_file", {"path": "notes/n.txt"})
    assert status == 0, result
    assert result["output"]["output"]["content"] == "note\n"
    status, result = _relay(aifr_bin, relays, "asyncfs", "io.fs.read_file", {"path": "top.txt"})
    assert status == 1
    assert result["error"]["code"] == "plugin.permission_denied"
    assert result["error"]["details"]["path"] == "top.txt"
