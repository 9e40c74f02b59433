"""A plugin's manifest (``aifr-plugin.json``), read and checked before its code is imported.

The manifest says who the plugin is, which aifr versions it supports, which capability
ids it registers and what its calls may reach. It is validated against
``plugin-manifest.schema.json`` (shipped beside this module) and then for what a
schema cannot say: the version is PEP 440 and the supported range parses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import JsonValue

from aifr.errors import ErrorCode, PluginError

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema import ValidationError as SchemaProblem

__all__ = [
    "MANIFEST_FILE_NAME",
    "PluginManifest",
    "manifest_schema",
    "parse_manifest",
    "read_manifest",
]

MANIFEST_FILE_NAME = "aifr-plugin.json"
_MAX_MANIFEST_BYTES = 256 * 1024


@cache
def manifest_schema() -> dict[str, Any]:
    """The JSON Schema every manifest is validated against (read on first use)."""
    text = resources.files("aifr.plugins").joinpath("plugin-manifest.schema.json").read_text()
    return cast(dict[str, Any], json.loads(text))


@cache
def _validator() -> Draft202012Validator:
    # Imported on first use: jsonschema's format checkers compile a grammar at import
    # (about 0.4 s), which every CLI start paid though most never read a manifest.
    from jsonschema import Draft202012Validator

    return Draft202012Validator(manifest_schema())


@dataclass(frozen=True, slots=True)
class PluginManifest:
    """A validated manifest: identity, supported aifr range, capabilities, permissions."""

    name: str
    version: str
    aifr: str
    capabilities: tuple[str, ...]
    description: str = ""
    fs_roots: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()

    def supports(self, aifr_version: str) -> bool:
        """Whether ``aifr_version`` lies in the manifest's ``aifr`` range (pre-releases too)."""
        return SpecifierSet(self.aifr).contains(aifr_version, prereleases=True)

    def to_dict(self) -> dict[str, JsonValue]:
        """The manifest as JSON (what ``aifr plugins show --json`` prints)."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "aifr": self.aifr,
            "capabilities": list(self.capabilities),
            "permissions": {
                "fs_roots": list(self.fs_roots),
                "hosts": list(self.hosts),
                "commands": list(self.commands),
            },
        }


def _invalid(source: str, message: str, **details: JsonValue) -> PluginError:
    return PluginError(
        f"manifest {source}: {message}", code=ErrorCode.PLUGIN_INVALID, manifest=source, **details
    )


def _location(problem: SchemaProblem) -> str:
    """Where a schema problem is; for a missing field, the field itself."""
    path = [str(part) for part in problem.absolute_path]
    if problem.validator == "required" and isinstance(problem.instance, dict):
        path += [k for k in problem.validator_value if k not in problem.instance][:1]
    return ".".join(path) or "<root>"


def parse_manifest(data: object, source: str) -> PluginManifest:
    """Check a manifest already read as JSON; ``source`` names it in errors.

    Raises:
        PluginError: ``plugin.invalid``, naming every field at fault.
    """
    problems = sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if problems:
        shown = [f"{_location(problem)}: {problem.message}" for problem in problems]
        raise _invalid(source, "; ".join(shown), problems=cast(JsonValue, shown))
    body = cast(dict[str, Any], data)
    try:
        Version(body["version"])
    except InvalidVersion:
        raise _invalid(source, f"version {body['version']!r} is not a PEP 440 version") from None
    try:
        SpecifierSet(body["aifr"])
    except InvalidSpecifier:
        raise _invalid(
            source, f"aifr {body['aifr']!r} is not a PEP 440 version range (e.g. '>=0.1,<0.2')"
        ) from None
    permissions = body.get("permissions", {})
    return PluginManifest(
        name=body["name"],
        version=body["version"],
        aifr=body["aifr"],
        capabilities=tuple(body["capabilities"]),
        description=body.get("description", ""),
        fs_roots=tuple(permissions.get("fs_roots", ())),
        hosts=tuple(permissions.get("hosts", ())),
        commands=tuple(permissions.get("commands", ())),
    )


def read_manifest(path: Path) -> PluginManifest:
    """Read and check the manifest file at ``path``.

    Raises:
        PluginError: ``plugin.invalid``: the file is missing, too large, not JSON, or
            does not match the schema.
    """
    source = str(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise _invalid(source, f"cannot read it: {exc.strerror or exc}") from exc
    if len(raw) > _MAX_MANIFEST_BYTES:
        raise _invalid(source, f"larger than {_MAX_MANIFEST_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid(source, f"not valid JSON: {exc}") from exc
    return parse_manifest(data, source)
