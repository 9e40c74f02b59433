"""The seed's helper functions and their safe defaults."""

from __future__ import annotations

import pytest

from aifr import (
    ErrorCode,
    OperationType,
    RiskLevel,
    create_delete_capability,
    create_read_capability,
    create_write_capability,
)
from aifr.errors import RiskConsistencyError


def test_read_capability_is_low_risk_and_idempotent() -> None:
    spec = create_read_capability("io.demo.read", "Read", "reads")
    assert spec.operation_type is OperationType.READ
    assert spec.effective_risk is RiskLevel.LOW
    assert spec.idempotent


def test_reversible_write_defaults_to_medium() -> None:
    spec = create_write_capability("io.demo.write")
    assert spec.effective_risk is RiskLevel.MEDIUM


def test_irreversible_write_with_compensation_defaults_to_high() -> None:
    spec = create_write_capability(
        "io.demo.write", reversible=False, compensation_capability_id="io.demo.undo"
    )
    assert spec.effective_risk is RiskLevel.HIGH
    assert spec.compensation.supported
    assert spec.compensation.capability_id == "io.demo.undo"


def test_irreversible_write_without_compensation_must_be_critical() -> None:
    with pytest.raises(RiskConsistencyError) as caught:
        create_write_capability("dangerous_op", reversible=False, compensation_capability_id=None)
    assert caught.value.code is ErrorCode.CAPABILITY_RISK_INCONSISTENT
    spec = create_write_capability("dangerous_op", reversible=False, risk_level=RiskLevel.CRITICAL)
    assert spec.effective_risk is RiskLevel.CRITICAL


def test_delete_capability_is_high_with_compensation_supported() -> None:
    spec = create_delete_capability("io.fs.delete_file", "Delete File", "deletes a file")
    assert spec.effective_risk is RiskLevel.HIGH
    assert not spec.side_effects.reversible
    assert spec.compensation.supported
