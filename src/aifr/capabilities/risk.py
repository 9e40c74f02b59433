"""Risk vocabulary and the Risk Consistency Check (seed 001).

The check is a pure function over a spec's operation, side effects, compensation and
risk, so that the spec model, the registry and the property tests share one definition.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "OperationType",
    "RiskLevel",
    "risk_consistency_violations",
]


class RiskLevel(StrEnum):
    """How much harm a capability can do; ordered LOW < MEDIUM < HIGH < CRITICAL."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        """Position in the order, for "at least" comparisons."""
        return _RANK[self]

    def at_least(self, other: RiskLevel) -> bool:
        """True when this level is ``other`` or more severe."""
        return self.rank >= other.rank


_RANK = {RiskLevel.LOW: 0, RiskLevel.MEDIUM: 1, RiskLevel.HIGH: 2, RiskLevel.CRITICAL: 3}


class OperationType(StrEnum):
    """What kind of effect a capability has on the world."""

    READ = "READ"
    WRITE = "WRITE"
    DELETE = "DELETE"
    EXECUTE = "EXECUTE"
    NETWORK = "NETWORK"


RULE_IRREVERSIBLE = (
    "Risk Consistency Check Failed: Irreversible side effects (reversible=false) "
    "require risk level HIGH or CRITICAL, got {level}"
)
RULE_DELETE = (
    "Risk Consistency Check Failed: DELETE operations require risk level HIGH or "
    "CRITICAL, got {level}"
)
RULE_NO_COMPENSATION = (
    "Risk Consistency Check Failed: Irreversible side effects without compensation "
    "(reversible=false, compensation.supported=false) require risk level CRITICAL, got {level}"
)


def risk_consistency_violations(
    *,
    operation_type: OperationType,
    reversible: bool,
    compensation_supported: bool,
    level: RiskLevel,
) -> list[str]:
    """Return the message of every Risk Consistency rule the combination breaks.

    Rule 1: irreversible side effects need HIGH or CRITICAL.
    Rule 2: DELETE needs HIGH or CRITICAL.
    Rule 3: irreversible without compensation needs CRITICAL.
    """
    violations: list[str] = []
    if not reversible and not level.at_least(RiskLevel.HIGH):
        violations.append(RULE_IRREVERSIBLE.format(level=level.value))
    if operation_type is OperationType.DELETE and not level.at_least(RiskLevel.HIGH):
        violations.append(RULE_DELETE.format(level=level.value))
    if not reversible and not compensation_supported and level is not RiskLevel.CRITICAL:
        violations.append(RULE_NO_COMPENSATION.format(level=level.value))
    return violations
