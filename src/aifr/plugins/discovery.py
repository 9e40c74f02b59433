"""Finding installed plugins: entry points in the group ``aifr.plugins``, never imported here.

Discovery reads installed distributions' metadata only. The manifest is found beside
the entry point's top-level package through the import system's finders, which locate a
package without running it, so a plugin that is disabled, out of range or in conflict is
refused before any of its code runs.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from aifr.errors import ErrorCode, PluginError
from aifr.plugins.manifest import MANIFEST_FILE_NAME

__all__ = ["ENTRY_POINT_GROUP", "Candidate", "discover"]

ENTRY_POINT_GROUP = "aifr.plugins"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One installed plugin entry point, before anything of it is loaded."""

    entry_point: EntryPoint

    @property
    def name(self) -> str:
        """The entry point's name: the plugin's name."""
        return self.entry_point.name

    @property
    def target(self) -> str:
        """What the entry point names (``module`` or ``module:object``)."""
        return self.entry_point.value

    @property
    def distribution(self) -> str | None:
        """The installed distribution that declares it, when known."""
        dist = self.entry_point.dist
        return None if dist is None else dist.metadata["Name"]

    @property
    def distribution_version(self) -> str | None:
        """That distribution's version, when known."""
        dist = self.entry_point.dist
        return None if dist is None else dist.version

    def manifest_path(self) -> Path:
        """Where the plugin's manifest is: at the top of its entry point's package.

        Raises:
            PluginError: ``plugin.import_failed`` when the package is not importable,
                ``plugin.invalid`` when the entry point does not name a package.
        """
        top = self.entry_point.module.split(".", 1)[0]
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError) as exc:
            raise self._error(
                f"cannot find module {top!r}: {exc}", ErrorCode.PLUGIN_IMPORT_FAILED
            ) from exc
        if spec is None:
            raise self._error(
                f"no module named {top!r} (entry point {self.target!r})",
                ErrorCode.PLUGIN_IMPORT_FAILED,
            )
        locations = list(spec.submodule_search_locations or [])
        if not locations:
            raise self._error(
                f"entry point {self.target!r} does not name a package; a plugin is a "
                f"package with {MANIFEST_FILE_NAME} at its top",
                ErrorCode.PLUGIN_INVALID,
            )
        return Path(locations[0]) / MANIFEST_FILE_NAME

    def _error(self, message: str, code: ErrorCode) -> PluginError:
        return PluginError(f"plugin {self.name!r}: {message}", code=code, plugin=self.name)


def discover(group: str = ENTRY_POINT_GROUP) -> list[Candidate]:
    """Every installed entry point in ``group``, sorted by name (metadata only)."""
    found = entry_points(group=group)
    return sorted((Candidate(ep) for ep in found), key=lambda c: (c.name, c.target))
