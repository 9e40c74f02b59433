"""Helpers that build specs with the seed's safe defaults (the safe path is the easy path).

- read: LOW risk, no side effects.
- write: MEDIUM when reversible, HIGH when not; compensation declared when given.
- delete: HIGH, irreversible, compensation supported (restore from trash).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import JsonValue

from aifr.capabilities.risk import OperationType, RiskLevel
from aifr.capabilities.spec import CapabilitySpec, Compensation, Risk, SideEffects

__all__ = ["create_delete_capability", "create_read_capability", "create_write_capability"]


def _schema(input_schema: dict[str, JsonValue] | None) -> dict[str, JsonValue]:
    return input_schema if input_schema is not None else {"type": "object", "properties": {}}


def create_read_capability(
    capability_id: str,
    name: str = "",
    description: str = "",
    *,
    input_schema: dict[str, JsonValue] | None = None,
    output_schema: dict[str, JsonValue] | None = None,
    version: str = "1",
    tags: Iterable[str] = (),
    justification: str = "reads only; no side effects",
) -> CapabilitySpec:
    """A READ capability: LOW risk, reversible, idempotent."""
    return CapabilitySpec(
        id=capability_id,
        name=name,
        description=description,
        version=version,
        input_schema=_schema(input_schema),
        output_schema=output_schema,
        operation_type=OperationType.READ,
        side_effects=SideEffects(reversible=True, scope="none"),
        compensation=Compensation(supported=False),
        risk=Risk(level=RiskLevel.LOW, justification=justification),
        idempotent=True,
        tags=tuple(tags),
    )


def create_write_capability(
    capability_id: str,
    name: str = "",
    description: str = "",
    *,
    reversible: bool = True,
    compensation_capability_id: str | None = None,
    risk_level: RiskLevel | None = None,
    input_schema: dict[str, JsonValue] | None = None,
    output_schema: dict[str, JsonValue] | None = None,
    scope: str = "local",
    version: str = "1",
    tags: Iterable[str] = (),
    requires_approval: bool = False,
) -> CapabilitySpec:
    """A WRITE capability: MEDIUM if reversible, HIGH if not.

    An irreversible write without a compensation capability is refused by the Risk
    Consistency Check unless ``risk_level=CRITICAL`` is given explicitly.

    Raises:
        RiskConsistencyError: irreversible with no compensation and not CRITICAL.
    """
    level = risk_level or (RiskLevel.MEDIUM if reversible else RiskLevel.HIGH)
    return CapabilitySpec(
        id=capability_id,
        name=name,
        description=description,
        version=version,
        input_schema=_schema(input_schema),
        output_schema=output_schema,
        operation_type=OperationType.WRITE,
        side_effects=SideEffects(reversible=reversible, scope=scope),
        compensation=Compensation(
            supported=compensation_capability_id is not None,
            strategy="capability" if compensation_capability_id else None,
            capability_id=compensation_capability_id,
        ),
        risk=Risk(level=level, requires_approval=requires_approval),
        tags=tuple(tags),
    )


def create_delete_capability(
    capability_id: str,
    name: str = "",
    description: str = "",
    *,
    compensation_capability_id: str | None = None,
    input_schema: dict[str, JsonValue] | None = None,
    output_schema: dict[str, JsonValue] | None = None,
    scope: str = "local",
    version: str = "1",
    tags: Iterable[str] = (),
    requires_approval: bool = False,
) -> CapabilitySpec:
    """A DELETE capability: HIGH risk, irreversible, compensation supported (trash)."""
    return CapabilitySpec(
        id=capability_id,
        name=name,
        description=description,
        version=version,
        input_schema=_schema(input_schema),
        output_schema=output_schema,
        operation_type=OperationType.DELETE,
        side_effects=SideEffects(reversible=False, scope=scope),
        compensation=Compensation(
            supported=True,
            strategy="capability" if compensation_capability_id else "restore_from_trash",
            capability_id=compensation_capability_id,
        ),
        risk=Risk(level=RiskLevel.HIGH, requires_approval=requires_approval),
        tags=tuple(tags),
    )
