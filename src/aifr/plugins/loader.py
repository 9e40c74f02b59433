"""``load_plugins``: select, check, import and register plugins; a broken one is skipped.

Order matters for safety. A plugin's manifest is read and checked first (enabled in the
settings, schema, name, aifr version range, capability ids claimed by aifr or by another
plugin), and only a plugin that passes is imported. Its capabilities are then checked
together (type, Risk Consistency Check, exactly the declared ids) and registered all at
once or not at all, and its principal is narrowed to its manifest's permissions.
Whatever goes wrong is reported with its reason and skipped: the runtime always starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aifr.capabilities import Capability, CapabilityRegistry
from aifr.errors import AifrError, ErrorCode, PluginError
from aifr.plugins.discovery import Candidate
from aifr.plugins.hookspecs import HOOK_NAMES
from aifr.plugins.host import PluginHost
from aifr.plugins.manifest import PluginManifest, read_manifest
from aifr.plugins.reports import PluginReport, PluginSet, PluginState
from aifr.stdlib import Permissions, PermissionTable

__all__ = ["is_selected", "load_plugins"]

logger = logging.getLogger(__name__)

ALL = "*"
_CONFLICT = ErrorCode.PLUGIN_CONFLICT


def is_selected(name: str, enabled: Sequence[str], disabled: Sequence[str]) -> bool:
    """Whether the settings let plugin ``name`` load (``disabled`` wins over ``enabled``)."""
    return name not in disabled and (ALL in enabled or name in enabled)


def _fail(name: str, message: str, code: ErrorCode) -> PluginError:
    return PluginError(f"plugin {name!r}: {message}", code=code, plugin=name)


class _Checked:
    """A candidate whose manifest passed, waiting for the conflict check and import."""

    def __init__(self, candidate: Candidate, manifest: PluginManifest) -> None:
        self.candidate = candidate
        self.manifest = manifest


def load_plugins(
    candidates: Sequence[Candidate],
    *,
    registry: CapabilityRegistry,
    permissions: PermissionTable,
    enabled: Sequence[str],
    disabled: Sequence[str],
    project_dir: Path,
    aifr_version: str,
) -> PluginSet:
    """Load the selected plugins into ``registry``; report every plugin found or enabled.

    Never raises for a plugin's fault: each failure becomes a broken report.
    """
    reports: list[PluginReport] = []
    checked: list[_Checked] = []
    for candidate in candidates:
        outcome = _select(candidate, candidates, enabled, disabled, aifr_version)
        if isinstance(outcome, _Checked):
            checked.append(outcome)
        else:
            reports.append(outcome)
    reports += _not_installed(candidates, enabled, disabled)
    hosts: list[PluginHost] = []
    conflicts = _conflicts(checked, registry)
    for item in checked:
        report = _report(item.candidate, item.manifest)
        error: AifrError | None = conflicts.get(item.candidate.name)
        if error is None:
            host = PluginHost(item.manifest)
            try:
                _register(item, host, registry, permissions, project_dir)
            except AifrError as exc:
                error = exc
            else:
                hosts.append(host)
        if error is not None:
            logger.warning("plugin %s skipped: %s", item.candidate.name, error.message)
            reports.append(_broken(report, error))
        else:
            reports.append(_with_state(report, PluginState.LOADED))
    return PluginSet(reports, hosts)


def _select(
    candidate: Candidate,
    candidates: Sequence[Candidate],
    enabled: Sequence[str],
    disabled: Sequence[str],
    aifr_version: str,
) -> _Checked | PluginReport:
    """The candidate ready to import, or its report (disabled, or broken by its manifest).

    The manifest is read even for a disabled plugin (no code runs), so the listing
    shows what it would register.
    """
    name = candidate.name
    try:
        manifest = read_manifest(candidate.manifest_path())
    except AifrError as exc:
        manifest, unreadable = None, exc
    report = _report(candidate, manifest)
    if not is_selected(name, enabled, disabled):
        return _disabled(report, name, disabled)
    others = [c.target for c in candidates if c.name == name]
    if len(others) > 1:
        clash = f"several entry points carry this name ({', '.join(others)})"
        return _broken(report, _fail(name, clash, _CONFLICT))
    if manifest is None:
        return _broken(report, unreadable)
    try:
        _check_manifest(name, manifest, aifr_version)
    except AifrError as exc:
        return _broken(report, exc)
    return _Checked(candidate, manifest)


def _not_installed(
    candidates: Sequence[Candidate], enabled: Sequence[str], disabled: Sequence[str]
) -> list[PluginReport]:
    """A broken report for each name ``enabled`` lists that nothing installed provides."""
    found = {c.name for c in candidates}
    return [
        PluginReport(
            name,
            PluginState.BROKEN,
            error=_fail(
                name,
                "enabled in aifr.toml, but no installed distribution has an entry point of "
                "this name in the group aifr.plugins",
                ErrorCode.PLUGIN_NOT_FOUND,
            ),
        )
        for name in enabled
        if name != ALL and name not in found and name not in disabled
    ]


def _report(candidate: Candidate, manifest: PluginManifest | None = None) -> PluginReport:
    return PluginReport(
        candidate.name,
        PluginState.BROKEN,
        target=candidate.target,
        distribution=candidate.distribution,
        distribution_version=candidate.distribution_version,
        manifest=manifest,
    )


def _with_state(
    report: PluginReport,
    state: PluginState,
    error: AifrError | None = None,
    note: str | None = None,
) -> PluginReport:
    return PluginReport(
        report.name,
        state,
        target=report.target,
        distribution=report.distribution,
        distribution_version=report.distribution_version,
        manifest=report.manifest,
        error=error,
        note=note,
    )


def _broken(report: PluginReport, error: AifrError) -> PluginReport:
    return _with_state(report, PluginState.BROKEN, error)


def _disabled(report: PluginReport, name: str, disabled: Sequence[str]) -> PluginReport:
    why = (
        "disabled in aifr.toml ([plugins] disabled)"
        if name in disabled
        else "not enabled: add it to [plugins] enabled in aifr.toml to load it"
    )
    return _with_state(report, PluginState.DISABLED, note=why)


def _check_manifest(name: str, manifest: PluginManifest, aifr_version: str) -> None:
    if manifest.name != name:
        raise _fail(
            name,
            f"its manifest is named {manifest.name!r}, not {name!r} (the entry point's name)",
            ErrorCode.PLUGIN_INVALID,
        )
    if not manifest.supports(aifr_version):
        raise _fail(
            name,
            f"supports aifr {manifest.aifr}, and this is aifr {aifr_version}",
            ErrorCode.PLUGIN_VERSION_UNSUPPORTED,
        )


def _conflicts(checked: Sequence[_Checked], registry: CapabilityRegistry) -> dict[str, AifrError]:
    """Plugins claiming an id aifr already has, or one another plugin claims too (both lose)."""
    claims: dict[str, list[str]] = {}
    for item in checked:
        for capability_id in item.manifest.capabilities:
            claims.setdefault(capability_id, []).append(item.candidate.name)
    errors: dict[str, AifrError] = {}
    for item in checked:
        name = item.candidate.name
        for capability_id in item.manifest.capabilities:
            if registry.versions(capability_id):
                message = f"claims {capability_id!r}, which aifr already registers"
            elif len(claims[capability_id]) > 1:
                rivals = ", ".join(sorted(set(claims[capability_id]) - {name}))
                message = f"claims {capability_id!r}, which plugin {rivals} claims too"
            else:
                continue
            errors[name] = PluginError(
                f"plugin {name!r}: {message}",
                code=_CONFLICT,
                plugin=name,
                capability_id=capability_id,
            )
            break
    return errors


def _register(
    item: _Checked,
    host: PluginHost,
    registry: CapabilityRegistry,
    permissions: PermissionTable,
    project_dir: Path,
) -> None:
    name = item.candidate.name
    hook = _hook(item.candidate)
    items = _call_hook(name, lambda: list(hook(host)))
    capabilities = _checked_capabilities(name, items, item.manifest)
    for capability in capabilities:
        registry.register(capability)
    manifest = item.manifest
    permissions.grant(
        Permissions(
            principal=host.principal,
            fs_roots=tuple(
                root if root.is_absolute() else project_dir / root
                for root in map(Path, manifest.fs_roots)
            ),
            hosts=manifest.hosts,
            commands=manifest.commands,
        )
    )


def _call_hook(name: str, run: Callable[[], Any]) -> Any:
    """Run plugin code; any failure becomes the plugin's error, never the runtime's."""
    try:
        return run()
    except AifrError:
        raise  # a capability the plugin built was refused: its own code and message
    except (Exception, SystemExit) as exc:  # plugin code may fail in any way
        raise _fail(name, f"{type(exc).__name__}: {exc}", ErrorCode.PLUGIN_IMPORT_FAILED) from exc


def _hook(candidate: Candidate) -> Callable[[PluginHost], Any]:
    target = _call_hook(candidate.name, candidate.entry_point.load)
    for hook_name in HOOK_NAMES:
        hook = getattr(target, hook_name, None)
        if callable(hook):
            return hook  # type: ignore[no-any-return]  # plugin code: checked by _checked_capabilities
    raise _fail(
        candidate.name,
        f"{candidate.target!r} defines no hook ({', '.join(HOOK_NAMES)})",
        ErrorCode.PLUGIN_INVALID,
    )


def _checked_capabilities(
    name: str, items: list[Any], manifest: PluginManifest
) -> list[Capability]:
    """The hook's result, refused unless it is capabilities with exactly the declared ids."""
    scratch = CapabilityRegistry()  # the Risk Consistency Check and duplicates, all or none
    for index, item in enumerate(items):
        if not isinstance(item, Capability):
            raise _fail(
                name,
                f"register_capabilities returned a {type(item).__name__} at position "
                f"{index}, not a Capability",
                ErrorCode.PLUGIN_INVALID,
            )
        scratch.register(item)
    registered = {item.id for item in items}
    declared = set(manifest.capabilities)
    for extra, problem in (
        (registered - declared, "registers capabilities its manifest does not declare"),
        (declared - registered, "declares capabilities it does not register"),
    ):
        if extra:
            raise _fail(name, f"{problem}: {', '.join(sorted(extra))}", ErrorCode.PLUGIN_INVALID)
    return list(items)
