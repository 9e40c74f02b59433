"""Capability model, validation, decorator and registry (DESIGN.md part A)."""

from aifr.capabilities.capability import CallInfo, Capability, Handler
from aifr.capabilities.decorator import build_capability, capability
from aifr.capabilities.factories import (
    create_delete_capability,
    create_read_capability,
    create_write_capability,
)
from aifr.capabilities.fingerprint import canonical_json, compact_encoder, digest, handler_digest
from aifr.capabilities.manifest import MANIFEST_VERSION, build_manifest
from aifr.capabilities.registry import CapabilityRegistry, split_ref
from aifr.capabilities.risk import OperationType, RiskLevel, risk_consistency_violations
from aifr.capabilities.spec import (
    CapabilitySpec,
    Compensation,
    Risk,
    SideEffects,
    check_risk_consistency,
    parse_version,
)

__all__ = [
    "MANIFEST_VERSION",
    "CallInfo",
    "Capability",
    "CapabilityRegistry",
    "CapabilitySpec",
    "Compensation",
    "Handler",
    "OperationType",
    "Risk",
    "RiskLevel",
    "SideEffects",
    "build_capability",
    "build_manifest",
    "canonical_json",
    "compact_encoder",
    "capability",
    "check_risk_consistency",
    "create_delete_capability",
    "create_read_capability",
    "create_write_capability",
    "digest",
    "handler_digest",
    "parse_version",
    "risk_consistency_violations",
    "split_ref",
]
