"""CapabilityRegistry: versions, pinning, filters, duplicates, the manifest."""

from __future__ import annotations

import json

import pytest

from aifr import (
    CapabilityRegistry,
    CapabilitySpec,
    ErrorCode,
    OperationType,
    Risk,
    RiskLevel,
    create_delete_capability,
    create_read_capability,
)
from aifr.capabilities import build_manifest, split_ref
from aifr.errors import CapabilityError, CapabilityNotFoundError, DuplicateCapabilityError


def versioned(version: str, description: str = "") -> CapabilitySpec:
    return create_read_capability("io.fs.read_file", description=description, version=version)


@pytest.fixture
def registry() -> CapabilityRegistry:
    return CapabilityRegistry(
        [versioned("1"), versioned("2"), versioned("2.1"), versioned("10"), versioned("1.5")]
    )


def test_get_without_a_pin_returns_the_latest_version(registry: CapabilityRegistry) -> None:
    spec = registry.get("io.fs.read_file")
    assert spec is not None
    assert spec.version == "10"


@pytest.mark.parametrize(
    ("ref", "version"),
    [
        ("io.fs.read_file@2", "2.1"),
        ("io.fs.read_file@1", "1.5"),
        ("io.fs.read_file@2.1", "2.1"),
        ("io.fs.read_file@10", "10"),
    ],
)
def test_a_pin_selects_the_latest_matching_version(
    registry: CapabilityRegistry, ref: str, version: str
) -> None:
    spec = registry.get(ref)
    assert spec is not None
    assert spec.version == version


def test_get_returns_none_for_unknown_ids_and_versions(registry: CapabilityRegistry) -> None:
    assert registry.get("io.fs.nothing") is None
    assert registry.get("io.fs.read_file@3") is None
    assert registry.get("io.fs.read_file@bad") is None


def test_resolve_names_the_missing_version_and_the_known_ones(registry: CapabilityRegistry) -> None:
    with pytest.raises(CapabilityNotFoundError) as caught:
        registry.resolve("io.fs.read_file@3")
    assert caught.value.code is ErrorCode.CAPABILITY_VERSION_NOT_FOUND
    assert "1, 1.5, 2, 2.1, 10" in caught.value.message
    with pytest.raises(CapabilityNotFoundError) as unknown:
        registry.resolve("io.fs.nothing")
    assert unknown.value.code is ErrorCode.CAPABILITY_NOT_FOUND


@pytest.mark.parametrize("ref", ["", "@1", "io.fs.read_file@", "io.fs.read_file@v2"])
def test_malformed_references_are_refused(ref: str) -> None:
    with pytest.raises(CapabilityError) as caught:
        split_ref(ref)
    assert caught.value.code is ErrorCode.CAPABILITY_BAD_REFERENCE


def test_duplicate_id_and_version_is_refused_and_the_first_kept(
    registry: CapabilityRegistry,
) -> None:
    with pytest.raises(DuplicateCapabilityError) as caught:
        registry.register(versioned("2", description="impostor"))
    assert caught.value.code is ErrorCode.CAPABILITY_DUPLICATE
    assert "io.fs.read_file@2" in caught.value.message
    kept = registry.get("io.fs.read_file@2.0")
    assert kept is not None
    assert kept.description == ""


def test_list_filters_by_tag_risk_and_operation() -> None:
    registry = CapabilityRegistry(
        [
            create_read_capability("a.read", tags=["fs"]),
            create_delete_capability("a.delete", tags=["fs", "danger"]),
            CapabilitySpec(id="a.exec", operation_type=OperationType.EXECUTE, risk=None),
            CapabilitySpec(
                id="a.net", operation_type=OperationType.NETWORK, risk=Risk(level=RiskLevel.MEDIUM)
            ),
        ]
    )
    assert [s.id for s in registry.list()] == ["a.delete", "a.exec", "a.net", "a.read"]
    assert [s.id for s in registry.list(tag="fs")] == ["a.delete", "a.read"]
    assert [s.id for s in registry.list(risk=RiskLevel.HIGH)] == ["a.delete", "a.exec"]
    assert [s.id for s in registry.list(operation=OperationType.NETWORK)] == ["a.net"]
    assert "a.exec" in registry
    assert len(registry) == 4


def test_list_all_versions_and_versions_are_ordered(registry: CapabilityRegistry) -> None:
    assert [s.version for s in registry.versions("io.fs.read_file")] == [
        "1",
        "1.5",
        "2",
        "2.1",
        "10",
    ]
    assert len(registry.list(all_versions=True)) == 5
    assert len(registry.list()) == 1


def test_registries_are_independent_objects() -> None:
    first, second = CapabilityRegistry(), CapabilityRegistry()
    first.register(versioned("1"))
    assert second.get("io.fs.read_file") is None


def test_manifest_lists_every_version_with_fingerprints(registry: CapabilityRegistry) -> None:
    manifest = build_manifest(registry)
    json.dumps(manifest)
    entries = manifest["capabilities"]
    assert isinstance(entries, list)
    assert len(entries) == 5
    for entry in entries:
        assert isinstance(entry, dict)
        fingerprint = entry["fingerprint"]
        assert isinstance(fingerprint, str)
        assert len(fingerprint) == 64
        restored = CapabilitySpec.model_validate(
            {k: v for k, v in entry.items() if k != "effective_risk"}
        )
        assert restored.fingerprint == fingerprint


def test_specs_declared_as_data_validate_inputs_with_json_schema() -> None:
    spec = create_read_capability(
        "data.lookup",
        input_schema={
            "type": "object",
            "properties": {
                "email": {"type": "string", "format": "email"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 10},
                "id": {"type": "string", "format": "uuid"},
                "site": {"type": "string", "format": "uri"},
                "code": {"type": "string", "pattern": "^[A-Z]{3}$", "minLength": 3},
            },
            "required": ["email"],
            "additionalProperties": False,
        },
    )
    capability = CapabilityRegistry([spec]).resolve("data.lookup")
    assert capability.validate_inputs({"email": "a@b.co", "limit": 3}) == {
        "email": "a@b.co",
        "limit": 3,
    }
    from aifr.errors import InputValidationError

    with pytest.raises(InputValidationError) as caught:
        capability.validate_inputs(
            {"limit": 11, "id": "nope", "site": "not a uri", "code": "ab", "extra": 1}
        )
    codes = {(e.path, e.code) for e in caught.value.errors}
    assert codes == {
        ("email", "required"),
        ("limit", "max"),
        ("id", "uuid"),
        ("site", "url"),
        ("code", "pattern"),
        ("code", "length"),
        ("", "unexpected"),
    }


def test_a_hand_written_url_format_is_checked_like_uri() -> None:
    spec = create_read_capability(
        "data.fetch",
        input_schema={
            "type": "object",
            "properties": {"site": {"type": "string", "format": "url"}},
        },
    )
    capability = CapabilityRegistry([spec]).resolve("data.fetch")
    assert capability.validate_inputs({"site": "https://example.com/a"}) == {
        "site": "https://example.com/a"
    }
    from aifr.errors import InputValidationError

    with pytest.raises(InputValidationError) as caught:
        capability.validate_inputs({"site": "not a url"})
    (error,) = caught.value.errors
    assert (error.path, error.code, error["expected"], error["received"]) == (
        "site",
        "url",
        "url",
        "not a url",
    )


def test_a_fallback_registers_an_unknown_id_on_first_lookup_and_is_asked_only_for_misses() -> None:
    registry = CapabilityRegistry([versioned("1")])
    asked: list[str] = []

    def lazily(capability_id: str) -> bool:
        asked.append(capability_id)
        if capability_id != "up.echo":
            return False
        registry.register(create_read_capability("up.echo"))
        return True

    registry.add_fallback(lazily)
    assert registry.get("io.fs.read_file") is not None
    assert asked == []  # known ids never reach the fallback
    spec = registry.get("up.echo@1")
    assert spec is not None and spec.id == "up.echo"
    assert registry.get("up.echo") is not None
    assert asked == ["up.echo"]  # registered once, then found
    with pytest.raises(CapabilityNotFoundError):
        registry.resolve("up.other")
    assert asked == ["up.echo", "up.other"]
