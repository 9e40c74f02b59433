"""Every hook a plugin may implement, in one place (datasette's ``hookspecs.py``).

A plugin's entry point (group ``aifr.plugins``) names a module or object; aifr calls
the hooks below that it defines, by name, once per process when the runtime is built.
Nothing is called at import time, and a plugin that defines none of them is broken.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from aifr.capabilities import Capability
from aifr.plugins.host import PluginHost

__all__ = ["HOOK_NAMES", "PluginHooks"]


class PluginHooks(Protocol):
    """The hooks of a plugin, each one optional."""

    def register_capabilities(self, host: PluginHost) -> Iterable[Capability]:
        """Return the plugin's capabilities (exactly the ids its manifest declares)."""
        ...


HOOK_NAMES = ("register_capabilities",)
"""The hook names aifr looks up on a plugin's entry point object."""
