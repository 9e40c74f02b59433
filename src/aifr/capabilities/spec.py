"""``CapabilitySpec`` and its parts, exactly as DESIGN.md part A names them.

Specs are immutable pydantic models. The Risk Consistency Check runs when a spec is
constructed (and the registry runs it again), so an inconsistent spec cannot exist.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from aifr.capabilities.fingerprint import digest
from aifr.capabilities.risk import OperationType, RiskLevel, risk_consistency_violations
from aifr.errors import CapabilityError, ErrorCode, RiskConsistencyError

__all__ = [
    "CAPABILITY_ID_PATTERN",
    "VERSION_PATTERN",
    "CapabilitySpec",
    "Compensation",
    "Risk",
    "SideEffects",
    "check_risk_consistency",
    "parse_version",
]

CAPABILITY_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$"
VERSION_PATTERN = r"^\d+(\.\d+){0,2}$"
_VERSION_RE = re.compile(VERSION_PATTERN)

_MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


def parse_version(version: str) -> tuple[int, ...]:
    """Turn ``"1.2"`` into ``(1, 2)`` for ordering; raises ``CapabilityError`` if malformed."""
    if not _VERSION_RE.match(version):
        raise CapabilityError(
            f"invalid version {version!r}: expected 1 to 3 dot-separated integers like '2' or '1.4.0'",
            code=ErrorCode.CAPABILITY_BAD_REFERENCE,
            version=version,
        )
    return tuple(int(part) for part in version.split("."))


def _empty_object_schema() -> dict[str, JsonValue]:
    return {"type": "object", "properties": {}}


class SideEffects(BaseModel):
    """What a capability changes outside itself, and whether that can be undone."""

    model_config = _MODEL_CONFIG

    reversible: bool = True
    scope: str = "none"
    description: str = ""


class Compensation(BaseModel):
    """How a capability's effect is undone: a strategy, often another capability."""

    model_config = _MODEL_CONFIG

    supported: bool = False
    strategy: str | None = None
    capability_id: Annotated[str | None, Field(pattern=CAPABILITY_ID_PATTERN)] = None

    @model_validator(mode="after")
    def _capability_implies_supported(self) -> Self:
        if self.capability_id is not None and not self.supported:
            raise CapabilityError(
                "compensation.capability_id is set but compensation.supported is false",
                capability_id=self.capability_id,
            )
        return self


class Risk(BaseModel):
    """Declared risk: a level, why, and whether every call needs a human approval."""

    model_config = _MODEL_CONFIG

    level: RiskLevel
    justification: str = ""
    requires_approval: bool = False


class CapabilitySpec(BaseModel):
    """Everything aifr knows about a capability except its handler.

    ``risk`` may be omitted; such a capability is treated as HIGH (``effective_risk``).
    ``fingerprint`` is derived from every other field, including ``handler_digest``,
    so any change to the spec or its handler's source changes it.
    """

    model_config = _MODEL_CONFIG

    id: Annotated[str, Field(pattern=CAPABILITY_ID_PATTERN, max_length=200)]
    name: str = ""
    description: str = ""
    version: str = "1"
    input_schema: dict[str, JsonValue] = Field(default_factory=_empty_object_schema)
    output_schema: dict[str, JsonValue] | None = None
    operation_type: OperationType
    side_effects: SideEffects = SideEffects()
    compensation: Compensation = Compensation()
    risk: Risk | None = None
    idempotent: bool = False
    tags: tuple[str, ...] = ()
    timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    handler_digest: str | None = None
    fingerprint: str = ""

    @field_validator("version")
    @classmethod
    def _version_is_numeric(cls, value: str) -> str:
        parse_version(value)
        return value

    @field_validator("tags")
    @classmethod
    def _tags_sorted_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(value)))

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name") and isinstance(data.get("id"), str):
            return {**data, "name": data["id"].rsplit(".", 1)[-1].replace("_", " ").title()}
        return data

    @model_validator(mode="after")
    def _check_and_fingerprint(self) -> Self:
        check_risk_consistency(self)
        expected = self.compute_fingerprint()
        if not self.fingerprint:
            # The model is frozen; the fingerprint is derived once, here, at construction.
            object.__setattr__(self, "fingerprint", expected)
        elif self.fingerprint != expected:
            raise CapabilityError(
                f"capability {self.id}@{self.version}: fingerprint {self.fingerprint[:12]}... "
                f"does not match its content ({expected[:12]}...)",
                code=ErrorCode.CAPABILITY_FINGERPRINT_MISMATCH,
                capability_id=self.id,
            )
        return self

    @property
    def effective_risk(self) -> RiskLevel:
        """The declared risk level, or HIGH when the spec declares none."""
        return self.risk.level if self.risk is not None else RiskLevel.HIGH

    @property
    def requires_approval(self) -> bool:
        """Whether the spec itself asks for a human approval on every call."""
        return self.risk is not None and self.risk.requires_approval

    @property
    def ref(self) -> str:
        """``id@version``, the exact reference of this spec."""
        return f"{self.id}@{self.version}"

    @property
    def version_key(self) -> tuple[int, ...]:
        """Sortable form of ``version``, padded to three parts so ``2 == 2.0 == 2.0.0``."""
        key = parse_version(self.version)
        return key + (0,) * (3 - len(key))

    def compute_fingerprint(self) -> str:
        """Digest of every field but the fingerprint itself."""
        return digest(self.model_dump(mode="json", exclude={"fingerprint"}))


def check_risk_consistency(spec: CapabilitySpec) -> None:
    """Raise ``RiskConsistencyError`` listing every rule ``spec`` breaks.

    Raises:
        RiskConsistencyError: the spec's risk level is too low for its effects.
    """
    violations = risk_consistency_violations(
        operation_type=spec.operation_type,
        reversible=spec.side_effects.reversible,
        compensation_supported=spec.compensation.supported,
        level=spec.effective_risk,
    )
    if violations:
        raise RiskConsistencyError(capability_id=spec.id, violations=violations)
