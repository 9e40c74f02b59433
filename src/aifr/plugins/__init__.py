"""Plugins (DESIGN.md part G): entry-point packages with a manifest, loaded by ``app`` only."""

from aifr.plugins.discovery import ENTRY_POINT_GROUP, Candidate, discover
from aifr.plugins.hookspecs import HOOK_NAMES, PluginHooks
from aifr.plugins.host import PluginHost
from aifr.plugins.loader import is_selected, load_plugins
from aifr.plugins.manifest import (
    MANIFEST_FILE_NAME,
    PluginManifest,
    manifest_schema,
    parse_manifest,
    read_manifest,
)
from aifr.plugins.reports import PluginReport, PluginSet, PluginState

__all__ = [
    "ENTRY_POINT_GROUP",
    "HOOK_NAMES",
    "MANIFEST_FILE_NAME",
    "Candidate",
    "PluginHooks",
    "PluginHost",
    "PluginManifest",
    "PluginReport",
    "PluginSet",
    "PluginState",
    "discover",
    "is_selected",
    "load_plugins",
    "manifest_schema",
    "parse_manifest",
    "read_manifest",
]
