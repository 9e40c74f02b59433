"""What became of each plugin: loaded, broken (and why) or disabled, for the CLI and the app."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from pydantic import JsonValue

from aifr.errors import AifrError, ErrorCode, PluginError
from aifr.invocation import Runtime
from aifr.plugins.host import PluginHost
from aifr.plugins.manifest import PluginManifest

__all__ = ["PluginReport", "PluginSet", "PluginState"]


class PluginState(StrEnum):
    """Where a plugin ended up."""

    LOADED = "loaded"
    BROKEN = "broken"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class PluginReport:
    """One plugin's outcome; ``error`` says why it is broken, ``note`` why it is disabled."""

    name: str
    state: PluginState
    target: str = ""
    distribution: str | None = None
    distribution_version: str | None = None
    manifest: PluginManifest | None = None
    error: AifrError | None = None
    note: str | None = None

    @property
    def version(self) -> str | None:
        """The manifest's version, else the distribution's."""
        return self.manifest.version if self.manifest is not None else self.distribution_version

    @property
    def capabilities(self) -> tuple[str, ...]:
        """The capability ids the manifest declares (registered only when loaded)."""
        return self.manifest.capabilities if self.manifest is not None else ()

    @property
    def reason(self) -> str | None:
        """Why the plugin is not loaded, or ``None``."""
        return self.note if self.error is None else self.error.message

    def to_dict(self) -> dict[str, JsonValue]:
        """The JSON shape ``aifr plugins list --json`` and ``show --json`` print."""
        return {
            "name": self.name,
            "version": self.version,
            "state": self.state.value,
            "reason": self.reason,
            "code": None if self.error is None else self.error.code.value,
            "capabilities": list(self.capabilities),
            "entry_point": self.target,
            "distribution": self.distribution,
            "manifest": None if self.manifest is None else self.manifest.to_dict(),
        }


class PluginSet:
    """Every plugin's report, and the hosts of those loaded (attached to the runtime later)."""

    def __init__(
        self, reports: Iterable[PluginReport] = (), hosts: Iterable[PluginHost] = ()
    ) -> None:
        self.reports = tuple(sorted(reports, key=lambda r: r.name))
        self._hosts = tuple(hosts)

    def attach(self, runtime: Runtime) -> None:
        """Route every loaded plugin's calls to ``runtime``."""
        for host in self._hosts:
            host.attach(runtime)

    def get(self, name: str) -> PluginReport:
        """The report of the plugin called ``name``.

        Raises:
            PluginError: ``plugin.not_found``.
        """
        for report in self.reports:
            if report.name == name:
                return report
        known = ", ".join(r.name for r in self.reports) or "none"
        raise PluginError(
            f"no plugin named {name!r} (installed or enabled: {known})",
            code=ErrorCode.PLUGIN_NOT_FOUND,
            plugin=name,
        )

    def __len__(self) -> int:
        return len(self.reports)
