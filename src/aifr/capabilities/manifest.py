"""The manifest of everything registered: what `aifr capabilities manifest` prints."""

from __future__ import annotations

from pydantic import JsonValue

from aifr.capabilities.registry import CapabilityRegistry

__all__ = ["MANIFEST_VERSION", "build_manifest"]

MANIFEST_VERSION = "1"


def build_manifest(registry: CapabilityRegistry) -> dict[str, JsonValue]:
    """A JSON document listing every registered version with its fingerprint."""
    capabilities: list[JsonValue] = [
        {**c.spec.model_dump(mode="json"), "effective_risk": c.spec.effective_risk.value}
        for c in registry
    ]
    return {"manifest_version": MANIFEST_VERSION, "capabilities": capabilities}
