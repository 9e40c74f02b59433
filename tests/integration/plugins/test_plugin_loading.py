"""Broken plugins are reported with their reason and skipped; the rest keeps running.

Every plugin here is a small distribution found through its real entry point (a
dist-info on ``PYTHONPATH``), and every check runs the installed ``aifr`` command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from plugin_kit import READ_PLUGIN, aifr, call_json, listing, make_project, manifest
from plugin_kit import write_plugin as install


def _marking(marker_dir: Path, name: str, code: str) -> str:
    """``code`` that first leaves a file behind, so a test can tell it was imported."""
    return f"from pathlib import Path\nPath({str(marker_dir / name)!r}).touch()\n{code}"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AIFR_")}


class World:
    """One site of plugins, one project enabling them all ("*"), and its listing."""

    def __init__(self, root: Path, aifr_bin: str) -> None:
        self.site = root / "site"
        self.marks = root / "marks"
        self.marks.mkdir(parents=True)
        self.aifr_bin = aifr_bin
        self.env = _env()
        self._install()
        self.project = make_project(
            root / "project",
            enabled=["*", "ghost"],
            extra_config='disabled = ["switched-off"]\n',
        )
        self.plugins = listing(aifr_bin, self.project, self.env, self.site)

    def _install(self) -> None:
        site = self.site

        def plugin(name: str, caps: list[str], code: str | None = None, **kw: Any) -> None:
            body = code if code is not None else READ_PLUGIN.format(cap=caps[0])
            install(
                site,
                name,
                code=_marking(self.marks, name, body),
                plugin_manifest=kw.pop("plugin_manifest", manifest(name, caps)),
                **kw,
            )

        plugin("good", ["good.answer"])
        plugin("import-boom", ["boom.answer"], "import not_a_module_anywhere_xyz\n")
        plugin("exits", ["exits.answer"], "raise SystemExit(3)\n")
        bad = manifest("bad-manifest", ["bad.answer"])
        del bad["aifr"]
        plugin("bad-manifest", ["bad.answer"], plugin_manifest=bad)
        plugin("not-json", ["nj.answer"], plugin_manifest="{not json")
        plugin("no-manifest", ["nm.answer"], plugin_manifest=None)
        plugin("misnamed", ["mis.answer"], plugin_manifest=manifest("other-name", ["mis.answer"]))
        risky = (
            "from aifr.capabilities import capability\n"
            "def register_capabilities(host):\n"
            "    @capability('risky.wipe', operation='DELETE', risk='LOW')\n"
            "    def wipe() -> None:\n"
            "        '''Wipe.'''\n"
            "    return [wipe]\n"
        )
        plugin("risky", ["risky.wipe"], risky)
        future = manifest("future", ["future.answer"])
        future["aifr"] = ">=9"
        plugin("future", ["future.answer"], plugin_manifest=future)
        plugin("twin-a", ["twin.answer"])
        plugin("twin-b", ["twin.answer"])
        plugin("usurper", ["io.fs.read_file"])
        sneaky = READ_PLUGIN.format(cap="sneaky.a") + (
            "\n_first = register_capabilities\n"
            "def register_capabilities(host):\n"
            "    from aifr.capabilities import capability\n"
            "    @capability('sneaky.b', operation='READ', risk='LOW')\n"
            "    def b() -> None:\n"
            "        '''B.'''\n"
            "    return [*_first(host), b]\n"
        )
        plugin("sneaky", ["sneaky.a"], sneaky)
        plugin("lazy", ["lazy.a", "lazy.b"], READ_PLUGIN.format(cap="lazy.a"))
        plugin("hookless", ["hookless.a"], "VALUE = 1\n")
        plugin("not-caps", ["notcaps.a"], "def register_capabilities(host):\n    return [1]\n")
        plugin("switched-off", ["off.answer"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, aifr_bin: str) -> World:
    return World(tmp_path_factory.mktemp("plugins"), aifr_bin)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("import-boom", "plugin.import_failed"),
        ("exits", "plugin.import_failed"),
        ("bad-manifest", "plugin.invalid"),
        ("not-json", "plugin.invalid"),
        ("no-manifest", "plugin.invalid"),
        ("misnamed", "plugin.invalid"),
        ("risky", "capability.risk_inconsistent"),
        ("future", "plugin.version_unsupported"),
        ("twin-a", "plugin.conflict"),
        ("twin-b", "plugin.conflict"),
        ("usurper", "plugin.conflict"),
        ("sneaky", "plugin.invalid"),
        ("lazy", "plugin.invalid"),
        ("hookless", "plugin.invalid"),
        ("not-caps", "plugin.invalid"),
        ("ghost", "plugin.not_found"),
    ],
)
def test_a_broken_plugin_is_listed_as_broken_with_the_code_of_its_reason(
    world: World, name: str, code: str
) -> None:
    entry = world.plugins[name]
    assert entry["state"] == "broken"
    assert entry["code"] == code
    assert entry["reason"]


def test_the_reasons_name_what_is_wrong(world: World) -> None:
    reasons = {name: entry["reason"] for name, entry in world.plugins.items()}
    assert "not_a_module_anywhere_xyz" in reasons["import-boom"]
    assert "'aifr' is a required property" in reasons["bad-manifest"]
    assert "Risk Consistency Check Failed" in reasons["risky"]
    assert ">=9" in reasons["future"]
    assert "twin-b" in reasons["twin-a"] and "twin-a" in reasons["twin-b"]
    assert "io.fs.read_file" in reasons["usurper"]
    assert "sneaky.b" in reasons["sneaky"]
    assert "lazy.b" in reasons["lazy"]
    assert "other-name" in reasons["misnamed"]


def test_a_good_plugin_loads_and_answers_beside_the_broken_ones(world: World) -> None:
    assert world.plugins["good"]["state"] == "loaded"
    assert world.plugins["good"]["capabilities"] == ["good.answer"]
    status, result = call_json(world.aifr_bin, world.project, world.env, world.site, "good.answer")
    assert status == 0
    assert result["output"] == {"answer": 42}


def test_no_capability_of_a_broken_plugin_is_registered(world: World) -> None:
    done = aifr(world.aifr_bin, world.project, world.env, world.site, "capabilities", "list")
    assert done.returncode == 0, done.stderr
    assert "good.answer" in done.stdout
    for absent in ("twin.answer", "sneaky.a", "sneaky.b", "lazy.a", "future.answer"):
        assert absent not in done.stdout
    assert "io.fs.read_file" in done.stdout  # aifr's own, not the usurper's


def test_a_disabled_plugin_is_listed_and_never_imported(world: World) -> None:
    entry = world.plugins["switched-off"]
    assert entry["state"] == "disabled"
    assert "disabled" in entry["reason"]
    assert entry["code"] is None
    assert entry["capabilities"] == ["off.answer"]  # read from its manifest, no code run
    assert not (world.marks / "switched-off").exists()


def test_a_plugin_refused_by_its_manifest_is_never_imported(world: World) -> None:
    for name in ("future", "twin-a", "twin-b", "usurper", "bad-manifest", "misnamed"):
        assert not (world.marks / name).exists(), name
    assert (world.marks / "good").exists()


def test_plugins_show_prints_one_plugin_and_an_unknown_name_is_not_found(world: World) -> None:
    done = aifr(
        world.aifr_bin, world.project, world.env, world.site, "plugins", "show", "future", "--json"
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["code"] == "plugin.version_unsupported"
    assert shown["manifest"]["aifr"] == ">=9"
    human = aifr(world.aifr_bin, world.project, world.env, world.site, "plugins", "show", "good")
    assert human.returncode == 0 and "loaded" in human.stdout
    missing = aifr(world.aifr_bin, world.project, world.env, world.site, "plugins", "show", "nope")
    assert missing.returncode == 5
    assert "plugin.not_found" in missing.stderr


MCP_PROBE = """
import json, sys
import anyio
from mcp import Client
from aifr.app import build_app
from aifr.transports.mcp import AifrMcpServer, McpIdentity, fixed_identity

async def main():
    app = build_app(sys.argv[1])
    server = AifrMcpServer.from_app(app, identity=fixed_identity(McpIdentity(principal="agent")))
    async with Client(server.server) as client:
        tools = [tool.name for tool in (await client.list_tools()).tools]
        answer = await client.call_tool("good.answer", {})
    print(json.dumps({"tools": tools, "answer": answer.structured_content}))

anyio.run(main)
"""


def test_the_mcp_server_starts_and_serves_the_good_plugin(world: World) -> None:
    done = subprocess.run(
        [sys.executable, "-c", MCP_PROBE, str(world.project)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**world.env, "PYTHONPATH": str(world.site)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "good.answer" in seen["tools"]
    assert "twin.answer" not in seen["tools"]
    assert seen["answer"] == {"answer": 42}


def test_without_enabled_plugins_installed_ones_stay_out(
    world: World, tmp_path: Path, aifr_bin: str
) -> None:
    project = make_project(tmp_path / "plain", enabled=[])
    done = aifr(aifr_bin, project, world.env, world.site, "capabilities", "list")
    assert done.returncode == 0, done.stderr
    assert "good.answer" not in done.stdout
    states = {
        e["name"]: e["state"] for e in listing(aifr_bin, project, world.env, world.site).values()
    }
    assert states["good"] == "disabled"
    assert "ghost" not in states
