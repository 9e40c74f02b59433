"""Every standard capability is honest about its risk and wired for compensation."""

from __future__ import annotations

from pathlib import Path

import pytest

from aifr.capabilities import CapabilityRegistry, OperationType, RiskLevel, check_risk_consistency
from aifr.stdlib import build_stdlib

EXPECTED = {
    "io.fs.read_file": (OperationType.READ, RiskLevel.LOW),
    "io.fs.list_dir": (OperationType.READ, RiskLevel.LOW),
    "io.fs.stat": (OperationType.READ, RiskLevel.LOW),
    "io.fs.write_file": (OperationType.WRITE, RiskLevel.MEDIUM),
    "io.fs.move": (OperationType.WRITE, RiskLevel.MEDIUM),
    "io.fs.delete": (OperationType.DELETE, RiskLevel.HIGH),
    "io.fs.restore": (OperationType.WRITE, RiskLevel.MEDIUM),
    "io.net.http_get": (OperationType.READ, RiskLevel.LOW),
    "io.net.http_request": (OperationType.NETWORK, RiskLevel.HIGH),
    "data.json.parse": (OperationType.READ, RiskLevel.LOW),
    "data.csv.parse": (OperationType.READ, RiskLevel.LOW),
    "data.query": (OperationType.READ, RiskLevel.LOW),
    "data.transform": (OperationType.READ, RiskLevel.LOW),
    "sys.exec": (OperationType.EXECUTE, RiskLevel.HIGH),
    "sys.env.read": (OperationType.READ, RiskLevel.LOW),
}


@pytest.fixture
def registry(tmp_path: Path) -> CapabilityRegistry:
    registry = CapabilityRegistry()
    for item in build_stdlib(project_dir=tmp_path, state_dir=tmp_path / ".aifr"):
        registry.register(item)
    return registry


def test_the_stdlib_holds_exactly_the_documented_capabilities(registry: CapabilityRegistry) -> None:
    assert {spec.id for spec in registry.list()} == set(EXPECTED)


@pytest.mark.parametrize(("capability_id", "expected"), sorted(EXPECTED.items()))
def test_each_capability_declares_its_operation_and_risk(
    registry: CapabilityRegistry, capability_id: str, expected: tuple[OperationType, RiskLevel]
) -> None:
    spec = registry.get(capability_id)
    assert spec is not None
    check_risk_consistency(spec)
    assert (spec.operation_type, spec.effective_risk) == expected


def test_every_declared_compensation_capability_is_registered(registry: CapabilityRegistry) -> None:
    for spec in registry.list():
        target = spec.compensation.capability_id
        if target is not None:
            assert registry.get(target) is not None, spec.id


def test_every_side_effect_is_compensable_or_read_only(
    registry: CapabilityRegistry,
) -> None:
    for spec in registry.list():
        if spec.operation_type in (
            OperationType.WRITE,
            OperationType.DELETE,
            OperationType.NETWORK,
            OperationType.EXECUTE,
        ):
            assert spec.compensation.supported, spec.id


def test_effects_aifr_cannot_undo_are_declared_irreversible(
    registry: CapabilityRegistry,
) -> None:
    irreversible = {spec.id for spec in registry.list() if not spec.side_effects.reversible}
    assert irreversible == {"io.fs.delete", "io.net.http_request", "sys.exec"}
    for capability_id in ("io.net.http_request", "sys.exec"):
        spec = registry.get(capability_id)
        assert spec is not None
        assert spec.compensation.strategy == "declared_by_caller"


def test_the_call_info_parameter_stays_out_of_the_input_schema(
    registry: CapabilityRegistry,
) -> None:
    spec = registry.get("io.fs.write_file")
    assert spec is not None
    assert set(spec.input_schema["properties"]) == {
        "path",
        "content",
        "encoding",
        "overwrite",
        "create_dirs",
    }
    assert spec.input_schema["required"] == ["path", "content"]


def test_building_the_stdlib_touches_nothing_on_disk(tmp_path: Path) -> None:
    build_stdlib(project_dir=tmp_path, state_dir=tmp_path / ".aifr", fs_roots=["."])
    assert list(tmp_path.iterdir()) == []
