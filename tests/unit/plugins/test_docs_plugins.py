"""docs/plugins.md describes every plugin error code, manifest field, setting and command."""

from __future__ import annotations

from pathlib import Path

from aifr.cli.plugins import app as plugins_cli
from aifr.config import PluginSettings
from aifr.errors import ErrorCode
from aifr.plugins import HOOK_NAMES, manifest_schema

DOC = (Path(__file__).resolve().parents[3] / "docs" / "plugins.md").read_text()


def test_every_plugin_error_code_is_documented() -> None:
    codes = [code.value for code in ErrorCode if code.value.startswith("plugin.")]
    assert codes
    assert [code for code in codes if f"`{code}`" not in DOC] == []


def test_every_manifest_field_is_documented() -> None:
    schema = manifest_schema()
    fields = list(schema["properties"])
    fields += [f"permissions.{name}" for name in schema["properties"]["permissions"]["properties"]]
    assert [field for field in fields if f"`{field}`" not in DOC] == []


def test_every_plugin_setting_hook_and_command_is_documented() -> None:
    assert [key for key in PluginSettings.model_fields if f"{key} =" not in DOC] == []
    assert [hook for hook in HOOK_NAMES if f"`{hook}(host)`" not in DOC] == []
    commands = [command.name for command in plugins_cli.registered_commands]
    assert commands == ["list", "show"]
    assert [c for c in commands if f"`aifr plugins {c}" not in DOC] == []
