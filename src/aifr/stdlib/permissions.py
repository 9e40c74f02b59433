"""Narrower limits for some principals: what a plugin may reach through the stdlib.

A plugin's calls to ``io.fs``, ``io.net`` and ``sys.exec`` run as the principal
``plugin:NAME``. Every standard capability asks this table, at the point where it
acts (a path located, a host vetted, a command resolved), whether the principal of the
current request is narrowed, and refuses what lies outside the permissions the plugin's
manifest asked for, on top of the project's own roots and allowlists.

The table is keyed on the principal, not on who happens to be running: a call a plugin
started that waited for approval and is executed later, by someone else, is still
narrowed. A ``plugin:`` principal the table does not know (a plugin that is broken,
disabled or not installed) is granted nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aifr.errors import PluginPermissionError
from aifr.invocation import current_request

__all__ = ["PLUGIN_PRINCIPAL_PREFIX", "PermissionTable", "Permissions"]

PLUGIN_PRINCIPAL_PREFIX = "plugin:"
"""Principals named ``plugin:NAME`` are reserved for plugins and always narrowed."""


def _host_matches(pattern: str, host: str) -> bool:
    if pattern == host:
        return True
    return pattern.startswith("*.") and host.endswith(pattern[1:])


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one narrowed principal may reach: fs roots (absolute), hosts, commands."""

    principal: str
    fs_roots: tuple[Path, ...] = ()
    hosts: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    _real_roots: tuple[Path, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        real = tuple(Path(os.path.realpath(root)) for root in self.fs_roots)
        object.__setattr__(self, "_real_roots", real)
        object.__setattr__(self, "hosts", tuple(h.lower().rstrip(".") for h in self.hosts))

    @property
    def owner(self) -> str:
        """The plugin's name (the principal without its ``plugin:`` prefix)."""
        return self.principal.removeprefix(PLUGIN_PRINCIPAL_PREFIX)

    def check_path(self, absolute: Path, raw: str) -> None:
        """Refuse ``absolute`` (already confined, symlink-free) unless under a granted root.

        Raises:
            PluginPermissionError: no fs root was asked for, or none holds the path.
        """
        for root in self._real_roots:
            if absolute == root or root in absolute.parents:
                return
        raise self._refusal(f"use path {raw!r}", "fs_roots", self.fs_roots, path=raw)

    def check_host(self, host: str) -> None:
        """Refuse ``host`` unless the manifest asked for it (exactly or ``*.domain``).

        Raises:
            PluginPermissionError: the host was not asked for.
        """
        host = host.lower().rstrip(".")
        if any(_host_matches(pattern, host) for pattern in self.hosts):
            return
        raise self._refusal(f"reach host {host!r}", "hosts", self.hosts, host=host)

    def check_command(self, command: str) -> None:
        """Refuse ``command`` (a name or an allowlisted absolute path) unless asked for.

        Raises:
            PluginPermissionError: the command was not asked for.
        """
        if command in self.commands or Path(command).name in self.commands:
            return
        raise self._refusal(f"run command {command!r}", "commands", self.commands, command=command)

    def _refusal(
        self, action: str, permission: str, asked: Sequence[object], **details: str
    ) -> PluginPermissionError:
        shown = ", ".join(map(str, asked)) or "none"
        return PluginPermissionError(
            f"plugin {self.owner!r} may not {action}: its manifest's {permission} are: {shown}",
            plugin=self.owner,
            permission=permission,
            **details,
        )


class PermissionTable:
    """The narrowed principals, filled by the plugin loader before the runtime starts.

    Thread-safe; entries are only added. The stdlib reads it on every action it takes.
    """

    def __init__(self, entries: Sequence[Permissions] = ()) -> None:
        self._by_principal: dict[str, Permissions] = {}
        self._lock = threading.Lock()
        for entry in entries:
            self.grant(entry)

    def grant(self, permissions: Permissions) -> None:
        """Narrow ``permissions.principal`` to ``permissions``."""
        with self._lock:
            self._by_principal[permissions.principal] = permissions

    def for_principal(self, principal: str) -> Permissions | None:
        """The limits of ``principal``; nothing at all for an unknown ``plugin:`` name."""
        found = self._by_principal.get(principal)
        if found is None and principal.startswith(PLUGIN_PRINCIPAL_PREFIX):
            return Permissions(principal=principal)
        return found

    def current(self) -> Permissions | None:
        """The limits of the current request's principal, or ``None`` when it is not narrowed."""
        request = current_request()
        return None if request is None else self.for_principal(request.principal)

    def check_path(self, absolute: Path, raw: str) -> None:
        """Refuse a path outside the current principal's fs roots (see :class:`Permissions`)."""
        limits = self.current()
        if limits is not None:
            limits.check_path(absolute, raw)

    def check_host(self, host: str) -> None:
        """Refuse a host the current principal did not ask for."""
        limits = self.current()
        if limits is not None:
            limits.check_host(host)

    def check_command(self, command: str) -> None:
        """Refuse a command the current principal did not ask for."""
        limits = self.current()
        if limits is not None:
            limits.check_command(command)
