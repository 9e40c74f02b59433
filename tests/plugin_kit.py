"""Throwaway plugin distributions, and projects that load them, for the plugin tests.

A folder holding ``NAME-1.0.dist-info/entry_points.txt`` and the package it names is an
installed distribution to ``importlib.metadata`` once the folder is on ``PYTHONPATH``: the
plugins below are found through their real entry points, as a pip-installed one is.
Shared by tests/integration/plugins and tests/e2e.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from aifr.config import init_project

READ_PLUGIN = '''
from aifr.capabilities import capability


def register_capabilities(host):
    @capability("{cap}", operation="READ", risk="LOW", justification="computes a value")
    def answer() -> dict[str, int]:
        """Answer."""
        return {{"answer": 42}}

    return [answer]
'''

CALLING_PLUGIN = '''
from aifr.capabilities import capability


def register_capabilities(host):
    @capability("{cap}", operation="READ", risk="LOW", justification="calls aifr as the plugin")
    def relay(ref: str, inputs: dict) -> dict:
        """Call another capability through the plugin host and return its output."""
        return {{"output": host.call(ref, inputs)}}

    return [relay]
'''

ASYNC_CALLING_PLUGIN = '''
from aifr.capabilities import capability


def register_capabilities(host):
    @capability("{cap}", operation="READ", risk="LOW", justification="calls aifr as the plugin")
    async def relay(ref: str, inputs: dict) -> dict:
        """Call another capability through the plugin host, from async code."""
        return {{"output": await host.acall(ref, inputs)}}

    return [relay]
'''


def manifest(name: str, capabilities: list[str], **permissions: list[str]) -> dict[str, Any]:
    """A valid manifest for ``name`` declaring ``capabilities`` and ``permissions``."""
    body: dict[str, Any] = {
        "manifest_version": 1,
        "name": name,
        "version": "1.0",
        "aifr": ">=0.1",
        "capabilities": capabilities,
    }
    if permissions:
        body["permissions"] = permissions
    return body


def write_plugin(
    site: Path,
    name: str,
    *,
    code: str,
    plugin_manifest: dict[str, Any] | str | None,
    package: str | None = None,
    distribution: str | None = None,
) -> Path:
    """Install a plugin ``name`` into ``site``: a package, its manifest, a dist-info."""
    package = package or name.replace("-", "_")
    folder = site / package
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(code)
    if plugin_manifest is not None:
        text = (
            plugin_manifest
            if isinstance(plugin_manifest, str)
            else json.dumps(plugin_manifest, indent=2)
        )
        (folder / "aifr-plugin.json").write_text(text)
    dist = distribution or name
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[aifr.plugins]\n{name} = {package}\n")
    return folder


def make_project(root: Path, *, enabled: list[str], extra_config: str = "") -> Path:
    """An ``aifr init`` project enabling ``enabled`` plugins, plus ``extra_config`` lines."""
    init_project(root)
    config = root / "aifr.toml"
    text = config.read_text().replace("enabled = []", f"enabled = {json.dumps(enabled)}")
    config.write_text(text + extra_config)
    return root


def aifr(
    aifr_bin: str, project: Path, env: dict[str, str], site: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """``aifr ARGS`` run in ``project`` with ``site`` on ``PYTHONPATH``."""
    return subprocess.run(
        [aifr_bin, *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "PYTHONPATH": str(site), "COLUMNS": "200"},
        check=False,
    )


def listing(
    aifr_bin: str, project: Path, env: dict[str, str], site: Path
) -> dict[str, dict[str, Any]]:
    """``aifr plugins list --json`` by plugin name."""
    done = aifr(aifr_bin, project, env, site, "plugins", "list", "--json")
    assert done.returncode == 0, done.stderr
    return {entry["name"]: entry for entry in json.loads(done.stdout)}


def call_json(
    aifr_bin: str, project: Path, env: dict[str, str], site: Path, *args: str
) -> tuple[int, dict[str, Any]]:
    """``aifr call ... --json``: the exit status and the printed result."""
    done = aifr(aifr_bin, project, env, site, "call", *args, "--json")
    return done.returncode, json.loads(done.stdout)
