"""The capability registry: an explicit object, never a global (principle 4).

Several versions of one id may be registered; ``get("x")`` returns the latest and
``get("x@2")`` the latest whose version starts with ``2``. The registry knows nothing
about the runtime (principle 5).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator

from aifr.capabilities.capability import Capability, Handler
from aifr.capabilities.risk import OperationType, RiskLevel
from aifr.capabilities.spec import CapabilitySpec, check_risk_consistency, parse_version
from aifr.errors import (
    CapabilityError,
    CapabilityNotFoundError,
    DuplicateCapabilityError,
    ErrorCode,
)

__all__ = ["CapabilityRegistry", "split_ref"]


def split_ref(ref: str) -> tuple[str, str | None]:
    """Split ``"id@version"`` into its parts; the version is ``None`` when absent.

    Raises:
        CapabilityError: the reference is empty or the version is malformed.
    """
    capability_id, sep, version = ref.strip().partition("@")
    if not capability_id or (sep and not version):
        raise CapabilityError(
            f"invalid capability reference {ref!r}: expected 'id' or 'id@version'",
            code=ErrorCode.CAPABILITY_BAD_REFERENCE,
            reference=ref,
        )
    if version:
        parse_version(version)
    return capability_id, version or None


def _key(capability: Capability) -> tuple[int, ...]:
    return capability.spec.version_key


def _matches(spec_version: tuple[int, ...], pin: tuple[int, ...]) -> bool:
    return spec_version[: len(pin)] == pin


class CapabilityRegistry:
    """Holds every registered capability, by id and version. Thread-safe."""

    def __init__(self, capabilities: Iterable[Capability | CapabilitySpec] = ()) -> None:
        self._by_id: dict[str, dict[tuple[int, ...], Capability]] = {}
        self._latest: dict[str, Capability] = {}  # a bare id resolves in one lookup
        self._count = 0  # registrations are never removed, so this is the size
        self._lock = threading.Lock()
        self._fallbacks: list[Callable[[str], bool]] = []
        for item in capabilities:
            self.register(item)

    def register(
        self, item: Capability | CapabilitySpec, handler: Handler | None = None
    ) -> Capability:
        """Register a capability (or a bare spec with an optional handler).

        The Risk Consistency Check runs again here, so a spec built around the model's
        validation (``model_construct``) is still refused.

        Raises:
            RiskConsistencyError: the spec's risk is inconsistent with its effects.
            DuplicateCapabilityError: this id and version is already registered.
        """
        capability = (
            item if isinstance(item, Capability) else Capability(spec=item, handler=handler)
        )
        spec = capability.spec
        check_risk_consistency(spec)
        with self._lock:
            versions = self._by_id.setdefault(spec.id, {})
            existing = versions.get(spec.version_key)
            if existing is not None:
                raise DuplicateCapabilityError(
                    f"capability {spec.id}@{spec.version} is already registered "
                    f"(as {existing.spec.ref}, fingerprint {existing.spec.fingerprint[:12]}); "
                    "bump the version to register a changed capability",
                    capability_id=spec.id,
                    version=spec.version,
                )
            versions[spec.version_key] = capability
            latest = self._latest.get(spec.id)
            if latest is None or latest.spec.version_key < spec.version_key:
                self._latest[spec.id] = capability
            self._count += 1
        return capability

    def add_fallback(self, fallback: Callable[[str], bool]) -> None:
        """Ask ``fallback(capability_id)`` when an id is unknown; ``True``: it registered it.

        What registers capabilities lazily (the MCP gateway, whose upstream's tools are
        known only once it has started) hooks in here; the lookup is tried again after.
        """
        self._fallbacks.append(fallback)

    def get(self, ref: str) -> CapabilitySpec | None:
        """The spec for ``id`` or ``id@version``, or ``None`` when nothing matches."""
        try:
            return self.resolve(ref).spec
        except CapabilityError:
            return None

    def resolve(self, ref: str) -> Capability:
        """The capability for ``id`` or ``id@version`` (latest matching version).

        Raises:
            CapabilityError: the reference is malformed.
            CapabilityNotFoundError: no such id, or no version matching the pin.
        """
        latest = self._latest.get(ref)
        if latest is not None:
            return latest
        capability_id, version = split_ref(ref)
        versions = self._by_id.get(capability_id)
        if not versions and any(fallback(capability_id) for fallback in self._fallbacks):
            versions = self._by_id.get(capability_id)
        if not versions:
            raise CapabilityNotFoundError(
                f"unknown capability {capability_id!r}", capability_id=capability_id
            )
        candidates = list(versions.values())
        if version is not None:
            pin = parse_version(version)
            candidates = [c for c in candidates if _matches(c.spec.version_key, pin)]
            if not candidates:
                known = ", ".join(c.spec.version for c in sorted(versions.values(), key=_key))
                raise CapabilityNotFoundError(
                    f"capability {capability_id!r} has no version matching {version!r} "
                    f"(registered: {known})",
                    code=ErrorCode.CAPABILITY_VERSION_NOT_FOUND,
                    capability_id=capability_id,
                    version=version,
                )
        return max(candidates, key=lambda c: c.spec.version_key)

    def versions(self, capability_id: str) -> list[CapabilitySpec]:
        """Every registered version of ``capability_id``, oldest first."""
        versions = self._by_id.get(capability_id, {})
        return sorted((c.spec for c in versions.values()), key=lambda s: s.version_key)

    def list(
        self,
        *,
        tag: str | None = None,
        risk: RiskLevel | None = None,
        operation: OperationType | None = None,
        all_versions: bool = False,
    ) -> list[CapabilitySpec]:
        """Registered specs (latest versions unless ``all_versions``), sorted by id."""
        specs: list[CapabilitySpec] = []
        for capability_id in sorted(self._by_id):
            chosen = self.versions(capability_id)
            specs.extend(chosen if all_versions else chosen[-1:])
        return [
            s
            for s in specs
            if (tag is None or tag in s.tags)
            and (risk is None or s.effective_risk is risk)
            and (operation is None or s.operation_type is operation)
        ]

    def __contains__(self, ref: object) -> bool:
        return isinstance(ref, str) and self.get(ref) is not None

    def __iter__(self) -> Iterator[Capability]:
        for capability_id in sorted(self._by_id):
            versions = self._by_id[capability_id]
            yield from sorted(versions.values(), key=lambda c: c.spec.version_key)

    def __len__(self) -> int:
        return self._count
