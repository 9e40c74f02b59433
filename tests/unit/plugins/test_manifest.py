"""The plugin manifest: its JSON Schema, and what the schema cannot say."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from aifr.errors import PluginError
from aifr.plugins import MANIFEST_FILE_NAME, manifest_schema, parse_manifest, read_manifest

SAMPLE_MANIFEST = (
    Path(__file__).resolve().parents[3]
    / "plugins"
    / "aifr-sample"
    / "src"
    / "aifr_sample"
    / MANIFEST_FILE_NAME
)


def _valid(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "manifest_version": 1,
        "name": "demo",
        "version": "1.2.0",
        "aifr": ">=0.1,<0.2",
        "capabilities": ["demo.answer"],
        "permissions": {"fs_roots": ["data"], "hosts": ["*.example.com"], "commands": ["git"]},
    }
    body.update(changes)
    return body


def test_the_shipped_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(manifest_schema())


def test_the_sample_plugin_manifest_passes() -> None:
    manifest = read_manifest(SAMPLE_MANIFEST)
    assert manifest.name == "aifr-sample"
    assert manifest.capabilities == ("sample.greet", "sample.count_lines")
    assert manifest.fs_roots == ("notes",)
    assert manifest.hosts == () and manifest.commands == ()


def test_a_valid_manifest_keeps_every_field() -> None:
    manifest = parse_manifest(_valid(description="Demo."), "demo.json")
    assert manifest.to_dict() == {
        "name": "demo",
        "version": "1.2.0",
        "description": "Demo.",
        "aifr": ">=0.1,<0.2",
        "capabilities": ["demo.answer"],
        "permissions": {"fs_roots": ["data"], "hosts": ["*.example.com"], "commands": ["git"]},
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"aifr": None}, "aifr"),
        ({"capabilities": []}, "capabilities"),
        ({"capabilities": ["no spaces allowed"]}, "capabilities.0"),
        ({"name": "Demo Plugin"}, "name"),
        ({"manifest_version": 2}, "manifest_version"),
        ({"entry": "x"}, "<root>"),
        ({"permissions": {"network": ["x"]}}, "permissions"),
        ({"permissions": {"fs_roots": ["../etc"]}}, "permissions.fs_roots.0"),
        ({"permissions": {"hosts": ["http://x"]}}, "permissions.hosts.0"),
        ({"permissions": {"commands": ["rm -rf"]}}, "permissions.commands.0"),
    ],
)
def test_a_manifest_that_breaks_the_schema_is_refused_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    body = _valid(**changes)
    if changes.get("aifr", "") is None:
        del body["aifr"]
    with pytest.raises(PluginError) as caught:
        parse_manifest(body, "demo.json")
    assert caught.value.code == "plugin.invalid"
    problems = caught.value.details["problems"]
    assert isinstance(problems, list)
    assert any(str(problem).startswith(f"{field}:") for problem in problems)


@pytest.mark.parametrize(
    "changes", [{"version": "one point two"}, {"aifr": "~~0.1"}, {"aifr": "newest"}]
)
def test_a_version_or_range_that_is_not_pep_440_is_refused(changes: dict[str, str]) -> None:
    with pytest.raises(PluginError) as caught:
        parse_manifest(_valid(**changes), "demo.json")
    assert caught.value.code == "plugin.invalid"
    assert next(iter(changes.values())) in caught.value.message


def test_the_supported_range_includes_pre_releases_and_excludes_the_rest() -> None:
    manifest = parse_manifest(_valid(aifr=">=0.1,<0.2"), "demo.json")
    assert manifest.supports("0.1.0")
    assert manifest.supports("0.1.5.dev1")
    assert not manifest.supports("0.2.0")
    assert not manifest.supports("0.0.9")


@pytest.mark.parametrize(
    ("content", "why"),
    [(None, "cannot read"), ("{oops", "not valid JSON"), (" " * 300_000, "larger than")],
)
def test_a_missing_unreadable_or_huge_manifest_file_is_refused(
    tmp_path: Path, content: str | None, why: str
) -> None:
    path = tmp_path / MANIFEST_FILE_NAME
    if content is not None:
        path.write_text(content)
    with pytest.raises(PluginError) as caught:
        read_manifest(path)
    assert caught.value.code == "plugin.invalid"
    assert why in caught.value.message
    assert str(path) in caught.value.message


def test_a_manifest_file_round_trips_through_json(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_FILE_NAME
    path.write_text(json.dumps(_valid()))
    assert read_manifest(path) == parse_manifest(_valid(), str(path))
