"""The Risk Consistency Check: the seed's three rules, messages and property tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aifr import (
    CapabilityRegistry,
    CapabilitySpec,
    Compensation,
    ErrorCode,
    OperationType,
    Risk,
    RiskLevel,
    SideEffects,
)
from aifr.errors import RiskConsistencyError

SEED_MESSAGE = (
    "Risk Consistency Check Failed: Irreversible side effects (reversible=false) "
    "require risk level HIGH or CRITICAL, got LOW"
)


def make_spec(
    *,
    operation: OperationType = OperationType.WRITE,
    level: RiskLevel | None = RiskLevel.LOW,
    reversible: bool = True,
    compensated: bool = False,
) -> CapabilitySpec:
    return CapabilitySpec(
        id="test.cap",
        operation_type=operation,
        risk=None if level is None else Risk(level=level),
        side_effects=SideEffects(reversible=reversible),
        compensation=Compensation(supported=compensated),
    )


def test_irreversible_with_low_risk_is_rejected_with_the_seed_message() -> None:
    with pytest.raises(RiskConsistencyError) as caught:
        make_spec(reversible=False, compensated=True, level=RiskLevel.LOW)
    assert caught.value.code is ErrorCode.CAPABILITY_RISK_INCONSISTENT
    assert str(caught.value) == SEED_MESSAGE


def test_delete_below_high_risk_is_rejected() -> None:
    with pytest.raises(RiskConsistencyError) as caught:
        make_spec(operation=OperationType.DELETE, level=RiskLevel.MEDIUM)
    assert caught.value.violations == [
        "Risk Consistency Check Failed: DELETE operations require risk level HIGH or "
        "CRITICAL, got MEDIUM"
    ]


def test_irreversible_without_compensation_below_critical_is_rejected() -> None:
    with pytest.raises(RiskConsistencyError) as caught:
        make_spec(reversible=False, compensated=False, level=RiskLevel.HIGH)
    assert len(caught.value.violations) == 1
    assert caught.value.violations[0].startswith(
        "Risk Consistency Check Failed: Irreversible side effects without compensation"
    )
    assert caught.value.violations[0].endswith("require risk level CRITICAL, got HIGH")


def test_irreversible_without_compensation_is_accepted_at_critical() -> None:
    spec = make_spec(reversible=False, compensated=False, level=RiskLevel.CRITICAL)
    assert spec.effective_risk is RiskLevel.CRITICAL


def test_every_broken_rule_is_reported_at_once() -> None:
    with pytest.raises(RiskConsistencyError) as caught:
        make_spec(operation=OperationType.DELETE, reversible=False, level=RiskLevel.LOW)
    assert len(caught.value.violations) == 3
    assert caught.value.details["capability_id"] == "test.cap"


def test_missing_risk_counts_as_high_for_the_check() -> None:
    spec = make_spec(operation=OperationType.DELETE, level=None)
    assert spec.effective_risk is RiskLevel.HIGH
    with pytest.raises(RiskConsistencyError):
        make_spec(reversible=False, compensated=False, level=None)


def test_registry_runs_the_check_again_on_specs_built_without_validation() -> None:
    forged = CapabilitySpec.model_construct(
        id="forged.cap",
        version="1",
        operation_type=OperationType.DELETE,
        side_effects=SideEffects(),
        compensation=Compensation(),
        risk=Risk(level=RiskLevel.LOW),
        fingerprint="x",
    )
    registry = CapabilityRegistry()
    with pytest.raises(RiskConsistencyError):
        registry.register(forged)
    assert registry.get("forged.cap") is None


def _rules_hold(spec: CapabilitySpec) -> bool:
    level = spec.effective_risk
    irreversible = not spec.side_effects.reversible
    rule1 = not irreversible or level in (RiskLevel.HIGH, RiskLevel.CRITICAL)
    rule2 = spec.operation_type is not OperationType.DELETE or level in (
        RiskLevel.HIGH,
        RiskLevel.CRITICAL,
    )
    rule3 = not (irreversible and not spec.compensation.supported) or level is RiskLevel.CRITICAL
    return rule1 and rule2 and rule3


@given(
    operation=st.sampled_from(OperationType),
    level=st.one_of(st.none(), st.sampled_from(RiskLevel)),
    reversible=st.booleans(),
    compensated=st.booleans(),
)
def test_a_spec_exists_exactly_when_all_three_rules_hold(
    operation: OperationType, level: RiskLevel | None, reversible: bool, compensated: bool
) -> None:
    effective = level or RiskLevel.HIGH
    expected: list[str] = []
    if not reversible and effective.rank < RiskLevel.HIGH.rank:
        expected.append("Irreversible side effects (reversible=false)")
    if operation is OperationType.DELETE and effective.rank < RiskLevel.HIGH.rank:
        expected.append("DELETE operations")
    if not reversible and not compensated and effective is not RiskLevel.CRITICAL:
        expected.append("Irreversible side effects without compensation")
    try:
        spec = make_spec(
            operation=operation, level=level, reversible=reversible, compensated=compensated
        )
    except RiskConsistencyError as exc:
        assert expected, "a consistent spec was refused"
        assert len(exc.violations) == len(expected)
        for message, fragment in zip(exc.violations, expected, strict=True):
            assert message.startswith(f"Risk Consistency Check Failed: {fragment}")
            assert message.endswith(f"got {effective.value}")
    else:
        assert not expected
        assert _rules_hold(spec)


@given(
    operation=st.sampled_from(OperationType),
    level=st.one_of(st.none(), st.sampled_from(RiskLevel)),
    reversible=st.booleans(),
    compensated=st.booleans(),
)
def test_the_registry_accepts_a_spec_exactly_when_all_three_rules_hold(
    operation: OperationType, level: RiskLevel | None, reversible: bool, compensated: bool
) -> None:
    # model_construct skips the model's own check, so only the registry's can refuse.
    forged = CapabilitySpec.model_construct(
        id="forged.cap",
        version="1",
        operation_type=operation,
        side_effects=SideEffects(reversible=reversible),
        compensation=Compensation(supported=compensated),
        risk=None if level is None else Risk(level=level),
        fingerprint="x",
    )
    registry = CapabilityRegistry()
    try:
        registry.register(forged)
    except RiskConsistencyError as exc:
        assert not _rules_hold(forged), "the registry refused a consistent spec"
        assert exc.code is ErrorCode.CAPABILITY_RISK_INCONSISTENT
        effective = (level or RiskLevel.HIGH).value
        assert exc.violations
        for message in exc.violations:
            assert message.startswith("Risk Consistency Check Failed: ")
            assert message.endswith(f"got {effective}")
        assert registry.get("forged.cap") is None
    else:
        assert _rules_hold(forged), "the registry accepted an inconsistent spec"
        assert registry.get("forged.cap") is forged
