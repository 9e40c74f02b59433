"""CapabilitySpec: immutable, JSON round-trip, validated ids and versions."""

from __future__ import annotations

import pytest
from pydantic import ValidationError as PydanticValidationError

from aifr import CapabilitySpec, ErrorCode, OperationType, Risk, RiskLevel
from aifr.capabilities import parse_version
from aifr.errors import CapabilityError


def spec(**overrides: object) -> CapabilitySpec:
    base: dict[str, object] = {
        "id": "io.fs.read_file",
        "operation_type": OperationType.READ,
        "risk": Risk(level=RiskLevel.LOW, justification="reads"),
        "tags": ("fs", "io", "fs"),
    }
    base.update(overrides)
    return CapabilitySpec.model_validate(base)


def test_spec_round_trips_through_json_exactly() -> None:
    original = spec()
    restored = CapabilitySpec.model_validate_json(original.model_dump_json())
    assert restored == original
    assert restored.fingerprint == original.fingerprint


def test_spec_is_immutable() -> None:
    with pytest.raises(PydanticValidationError):
        spec().description = "changed"  # type: ignore[misc]  # the mutation under test


def test_tags_are_sorted_and_unique_and_name_defaults_from_id() -> None:
    made = spec()
    assert made.tags == ("fs", "io")
    assert made.name == "Read File"
    assert made.ref == "io.fs.read_file@1"


def test_a_tampered_fingerprint_is_refused_on_load() -> None:
    data = spec().model_dump(mode="json")
    data["fingerprint"] = "0" * 64
    with pytest.raises(CapabilityError) as caught:
        CapabilitySpec.model_validate(data)
    assert caught.value.code is ErrorCode.CAPABILITY_FINGERPRINT_MISMATCH


@pytest.mark.parametrize("bad_id", ["", "1abc", "has space", "a..b", "trailing."])
def test_malformed_ids_are_refused(bad_id: str) -> None:
    with pytest.raises(PydanticValidationError):
        spec(id=bad_id)


@pytest.mark.parametrize("bad_version", ["", "v1", "1.2.3.4", "one", "1..2"])
def test_malformed_versions_are_refused_with_a_reference_error(bad_version: str) -> None:
    with pytest.raises(CapabilityError) as caught:
        parse_version(bad_version)
    assert caught.value.code is ErrorCode.CAPABILITY_BAD_REFERENCE


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(PydanticValidationError):
        spec(colour="red")


def test_compensation_capability_requires_supported() -> None:
    with pytest.raises(CapabilityError):
        spec(compensation={"supported": False, "capability_id": "io.fs.restore"})
