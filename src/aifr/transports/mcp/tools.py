"""Capability specs as MCP tools: names, schemas and annotations.

A tool's name is the capability id. Its annotations are derived from the spec, never
declared twice: ``readOnlyHint`` from a READ operation, ``destructiveHint`` from a
DELETE or an irreversible effect, ``idempotentHint`` from the spec's idempotent flag
(reads are idempotent), ``openWorldHint`` from a NETWORK operation or an external
side-effect scope.

MCP clients up to protocol 2025-11-25 accept only object output schemas, so a
capability whose output is not an object is advertised with its output wrapped as
``{"result": value}``; :func:`structured_output` applies the same wrapping to results.

Clients validate ``structuredContent`` against the output schema with formats checked
(the TypeScript SDK uses ajv with ajv-formats), and JSON Schema's ``date-time`` and
``time`` formats are RFC 3339's, which require a UTC offset. A Python ``datetime`` or
``time`` without one serializes as ``2024-05-01T12:30:00``, so the output schema names
those two formats as a pattern that accepts the offset or its absence instead; a client
that checked the format would refuse a naive value as a protocol error and lose the
whole result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mcp_types as types
from pydantic import JsonValue

from aifr.capabilities import CapabilitySpec, OperationType

__all__ = [
    "APPROVAL_STATUS_TOOL",
    "OPEN_WORLD_SCOPES",
    "annotations_for",
    "approval_status_tool",
    "output_schema_for",
    "structured_output",
    "tool_for_spec",
]

APPROVAL_STATUS_TOOL = "aifr.approvals.status"
OPEN_WORLD_SCOPES = frozenset({"network", "external", "internet", "remote"})
_WRAP_KEY = "result"
_OFFSET = r"(Z|z|[+-]\d{2}:\d{2})?"
_CLOCK = r"\d{2}:\d{2}:\d{2}(\.\d+)?"
_OFFSET_OPTIONAL = {
    "date-time": rf"^\d{{4}}-\d{{2}}-\d{{2}}[Tt]{_CLOCK}{_OFFSET}$",
    "time": rf"^{_CLOCK}{_OFFSET}$",
}
_LITERAL_KEYWORDS = frozenset({"const", "default", "enum", "examples"})


def annotations_for(spec: CapabilitySpec) -> types.ToolAnnotations:
    """The MCP tool annotations a capability's operation and side effects imply."""
    operation = spec.operation_type
    read_only = operation is OperationType.READ
    destructive = not read_only and (
        operation is OperationType.DELETE or not spec.side_effects.reversible
    )
    open_world = (
        operation is OperationType.NETWORK or spec.side_effects.scope.lower() in OPEN_WORLD_SCOPES
    )
    return types.ToolAnnotations(
        title=spec.name,
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=read_only or spec.idempotent,
        open_world_hint=open_world,
    )


def _is_object_schema(schema: Mapping[str, JsonValue]) -> bool:
    return schema.get("type") == "object"


def _offset_optional(node: Any) -> Any:
    """``node`` with each ``date-time`` and ``time`` format made a pattern, offset optional."""
    if isinstance(node, list):
        return [_offset_optional(item) for item in node]
    if not isinstance(node, Mapping):
        return node
    out = {
        key: value if key in _LITERAL_KEYWORDS else _offset_optional(value)
        for key, value in node.items()
    }
    fmt = out.get("format")
    if isinstance(fmt, str) and fmt in _OFFSET_OPTIONAL:
        del out["format"]
        out.setdefault("pattern", _OFFSET_OPTIONAL[fmt])
    return out


def output_schema_for(spec: CapabilitySpec) -> dict[str, Any] | None:
    """The tool's output schema: the spec's own when it is an object, else wrapped."""
    schema = spec.output_schema
    if schema is None:
        return None
    schema = _offset_optional(schema)
    if _is_object_schema(schema):
        return dict(schema)
    definitions = {k: v for k, v in schema.items() if k in ("$defs", "definitions")}
    inner = {k: v for k, v in schema.items() if k not in definitions}
    return {
        "type": "object",
        "properties": {_WRAP_KEY: inner},
        "required": [_WRAP_KEY],
        **definitions,
    }


def structured_output(spec: CapabilitySpec, value: JsonValue) -> dict[str, Any] | None:
    """A capability's output as the ``structuredContent`` its tool schema promises."""
    schema = spec.output_schema
    if schema is None:
        return value if isinstance(value, dict) else None
    if _is_object_schema(schema):
        return value if isinstance(value, dict) else {_WRAP_KEY: value}
    return {_WRAP_KEY: value}


def _input_schema(spec: CapabilitySpec) -> dict[str, Any]:
    schema = dict(spec.input_schema)
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    return schema


def _description(spec: CapabilitySpec) -> str:
    risk = spec.effective_risk.value + ("" if spec.risk is not None else " (undeclared)")
    facts = f"[aifr: {spec.operation_type.value}, risk {risk}"
    if spec.requires_approval:
        facts += ", needs human approval"
    facts += f", version {spec.version}]"
    return f"{spec.description}\n\n{facts}" if spec.description else facts


def tool_for_spec(spec: CapabilitySpec) -> types.Tool:
    """The MCP tool that stands for one capability."""
    return types.Tool(
        name=spec.id,
        title=spec.name,
        description=_description(spec),
        input_schema=_input_schema(spec),
        output_schema=output_schema_for(spec),
        annotations=annotations_for(spec),
        _meta={
            "aifr/capability": spec.id,
            "aifr/version": spec.version,
            "aifr/fingerprint": spec.fingerprint,
            "aifr/risk": spec.effective_risk.value,
            "aifr/operation": spec.operation_type.value,
        },
    )


def approval_status_tool() -> types.Tool:
    """The built-in tool that reports an approval's state (and the result once run)."""
    return types.Tool(
        name=APPROVAL_STATUS_TOOL,
        title="Approval status",
        description=(
            "Report the state of an approval that an earlier tool call is waiting on "
            "(pending, approved, rejected, expired or consumed). When the approval has been "
            "granted, call the original tool again with the same arguments to run it."
        ),
        input_schema={
            "type": "object",
            "properties": {
                "approval_id": {"type": "string", "minLength": 1, "description": "Approval id."}
            },
            "required": ["approval_id"],
            "additionalProperties": False,
        },
        annotations=types.ToolAnnotations(
            title="Approval status",
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    )
