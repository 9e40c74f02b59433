"""``PluginHost``: how a plugin's handlers call other capabilities, governed and narrowed.

A call goes through ``Runtime.invoke`` as the principal ``plugin:NAME`` on behalf of
whoever invoked the plugin's capability, so the policy judges both (the strictest link
wins), the audit record names the plugin, and the stdlib narrows the call to the
manifest's permissions (see :mod:`aifr.stdlib.permissions`). Before the call is made the
host refuses what the manifest cannot cover at all: ``io.fs`` without fs roots,
``io.net`` without hosts, ``sys.exec`` without commands, and any capability outside
those families, ``data.*`` and the plugin's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import JsonValue

from aifr.capabilities import split_ref
from aifr.errors import PluginError, PluginPermissionError
from aifr.invocation import CallOptions, Result, Runtime, current_request
from aifr.plugins.manifest import PluginManifest
from aifr.stdlib import PLUGIN_PRINCIPAL_PREFIX

__all__ = ["PluginHost"]


class PluginHost:
    """One plugin's handle on the runtime; given to its ``register_capabilities`` hook."""

    def __init__(self, manifest: PluginManifest) -> None:
        self.manifest = manifest
        self.principal = PLUGIN_PRINCIPAL_PREFIX + manifest.name
        self._runtime: Runtime | None = None

    @property
    def name(self) -> str:
        """The plugin's name."""
        return self.manifest.name

    def attach(self, runtime: Runtime) -> None:
        """Route this plugin's calls to ``runtime`` (the composition root does this)."""
        self._runtime = runtime

    def call(
        self, ref: str, inputs: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> JsonValue:
        """Invoke ``ref`` as this plugin, on behalf of the current caller; return its output.

        Raises:
            PluginPermissionError: the manifest does not ask for what ``ref`` needs.
            PluginError: the plugin is not attached to a runtime.
            AifrError: the call was denied, awaits approval or failed (its own error).
        """
        runtime = self._runtime_for(ref)
        return _output(runtime.invoke(ref, inputs, self.principal, self._options(idempotency_key)))

    async def acall(
        self, ref: str, inputs: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> JsonValue:
        """:meth:`call` for ``async def`` handlers (same checks, same errors)."""
        runtime = self._runtime_for(ref)
        result = await runtime.ainvoke(ref, inputs, self.principal, self._options(idempotency_key))
        return _output(result)

    def _options(self, idempotency_key: str | None) -> CallOptions:
        outer = current_request()
        if outer is None:
            return CallOptions(idempotency_key=idempotency_key)
        return CallOptions(
            idempotency_key=idempotency_key,
            on_behalf_of=(outer.principal,),
            trace_id=outer.trace_id,
        )

    def _runtime_for(self, ref: str) -> Runtime:
        self.check(ref)
        if self._runtime is None:
            raise PluginError(
                f"plugin {self.name!r} called {ref!r} outside a runtime: invoke its "
                "capabilities through aifr (aifr call, MCP, a workflow)",
                plugin=self.name,
            )
        return self._runtime

    def check(self, ref: str) -> None:
        """Refuse ``ref`` when the manifest cannot cover it (before anything runs).

        Raises:
            PluginPermissionError: a family without its permission, or another family.
            CapabilityError: ``ref`` is malformed.
        """
        capability_id, _ = split_ref(ref)
        manifest = self.manifest
        needs = _permission_for(capability_id)
        if capability_id in manifest.capabilities or capability_id.startswith("data."):
            return
        if needs is None:
            raise PluginPermissionError(
                f"plugin {self.name!r} may not call {capability_id!r}: a plugin calls only "
                "its own capabilities, data.*, and io.fs / io.net / sys.exec as its manifest "
                "permits",
                plugin=self.name,
                permission="capabilities",
                capability_id=capability_id,
            )
        permission, asked = needs
        if not getattr(manifest, permission):
            raise PluginPermissionError(
                f"plugin {self.name!r} may not call {capability_id!r}: its manifest asks for "
                f"no {asked}",
                plugin=self.name,
                permission=permission,
                capability_id=capability_id,
            )


def _permission_for(capability_id: str) -> tuple[str, str] | None:
    """The manifest field a stdlib family needs, and its name in messages."""
    if capability_id.startswith("io.fs."):
        return "fs_roots", "fs roots"
    if capability_id.startswith("io.net."):
        return "hosts", "hosts"
    if capability_id == "sys.exec":
        return "commands", "commands"
    return None


def _output(result: Result) -> JsonValue:
    if result.ok:
        return result.output
    assert result.error is not None  # noqa: S101  # every status but ok carries its error
    raise result.error
