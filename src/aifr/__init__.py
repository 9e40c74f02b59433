"""aifr, the AI-First Runtime: governed, audited, durable actions for AI agents."""

from aifr.capabilities import (
    CallInfo,
    Capability,
    CapabilityRegistry,
    CapabilitySpec,
    Compensation,
    OperationType,
    Risk,
    RiskLevel,
    SideEffects,
    capability,
    create_delete_capability,
    create_read_capability,
    create_write_capability,
)
from aifr.errors import AifrError, ErrorCode
from aifr.invocation import Result, Runtime
from aifr.policy import Decision, PolicyDecision, PolicyEngine, PolicyRequest
from aifr.workflows import RunState, WorkflowBuilder, WorkflowEngine, WorkflowSpec, workflow

__all__ = [
    "AifrError",
    "CallInfo",
    "Capability",
    "CapabilityRegistry",
    "CapabilitySpec",
    "Compensation",
    "Decision",
    "ErrorCode",
    "OperationType",
    "PolicyDecision",
    "PolicyEngine",
    "PolicyRequest",
    "Risk",
    "Result",
    "RiskLevel",
    "RunState",
    "Runtime",
    "SideEffects",
    "WorkflowBuilder",
    "WorkflowEngine",
    "WorkflowSpec",
    "capability",
    "create_delete_capability",
    "create_read_capability",
    "create_write_capability",
    "workflow",
]

__version__ = "0.1.0"
