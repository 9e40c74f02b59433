"""Tool results from governed invocation results and errors.

Every outcome a client can meet is a ``CallToolResult``, never a protocol error or an
HTTP 500: success carries the output as ``structuredContent``; a denial, a failure, a
schema error or a pending approval is ``isError: true`` with a sentence that names the
rule, the reason or the bad field (so an agent can read and act on it), then the one
error payload of :func:`aifr.errors.error_payload` as JSON text, and the same payload
in ``_meta["aifr/error"]`` for programs.

Errors never set ``structuredContent``: clients validate it against the tool's output
schema even on errors (the TypeScript SDK does), and an error payload is not an output.
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types
from pydantic import JsonValue

from aifr.capabilities import CapabilitySpec
from aifr.errors import (
    AifrError,
    ApprovalError,
    ErrorCode,
    InputValidationError,
    OutputValidationError,
    error_payload,
)
from aifr.invocation import Result, Status
from aifr.transports.mcp.tools import APPROVAL_STATUS_TOOL, structured_output

__all__ = [
    "APPROVAL_META_KEY",
    "ERROR_META_KEY",
    "error_result",
    "ok_result",
    "pending_result",
    "tool_result",
]

APPROVAL_META_KEY = "aifr/approval_id"
ERROR_META_KEY = "aifr/error"


def _text(value: Any) -> list[types.ContentBlock]:
    body = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return [types.TextContent(type="text", text=body)]


def _summary(error: AifrError) -> str:
    if isinstance(error, InputValidationError) and error.errors:
        fields = "; ".join(
            f"{e.path or '<arguments>'}: {e['message']} ({e.code})" for e in error.errors
        )
        what = (
            "the tool's output does not match its output schema"
            if isinstance(error, OutputValidationError)
            else "invalid arguments"
        )
        return f"{error.code.value}: {what}: {fields}"
    rule = error.details.get("rule_id")
    if error.code is ErrorCode.POLICY_DENIED and rule:
        reason = error.details.get("reason") or error.message
        return f"{error.code.value}: denied by policy rule {rule!r}: {reason}"
    return f"{error.code.value}: {error.message}"


def _error(summary: str, payload: dict[str, JsonValue]) -> types.CallToolResult:
    return types.CallToolResult(
        content=[*_text(summary), *_text(payload)],
        is_error=True,
        _meta={ERROR_META_KEY: payload},
    )


def error_result(error: AifrError, **extra: JsonValue) -> types.CallToolResult:
    """A tool error carrying the error payload; ``extra`` adds top-level facts."""
    return _error(_summary(error), {**error_payload(error), **extra})


def ok_result(
    spec: CapabilitySpec | None, output: JsonValue, **meta: JsonValue
) -> types.CallToolResult:
    """A successful tool result; ``meta`` (audit id, decision) goes in ``_meta``."""
    structured = structured_output(spec, output) if spec is not None else output
    return types.CallToolResult(
        content=_text(output),
        structured_content=structured if isinstance(structured, dict) else None,
        _meta={f"aifr/{k}": v for k, v in meta.items() if v is not None} or None,
    )


def pending_result(
    result: Result, tool: str, *, note: str = "", status_tool: str = APPROVAL_STATUS_TOOL
) -> types.CallToolResult:
    """The structured "waiting for a human" result of a call that needs approval.

    ``tool`` and ``status_tool`` are the names the client lists those tools under.
    """
    approval_id = result.approval_id or ""
    decision = result.decision
    roles: list[JsonValue] = [*sorted(decision.approver_roles)] if decision else []
    how = (
        f"a person with one of the roles {roles} "
        f"runs 'aifr approvals approve {approval_id} --as THEIR_NAME'; then call {tool} again "
        f"with the same arguments (or pass _meta {{{APPROVAL_META_KEY!r}: {approval_id!r}}}). "
        f"Check progress with the {status_tool} tool."
    )
    error = ApprovalError(
        f"{tool} needs a human approval (approval id {approval_id})",
        code=ErrorCode.APPROVAL_REQUIRED,
        approval_id=approval_id,
    )
    payload: dict[str, JsonValue] = {
        **error_payload(error),
        "status": "pending_approval",
        "approval_id": approval_id,
        "tool": tool,
        "rule_id": decision.rule_id if decision else None,
        "reason": decision.reason if decision else None,
        "approver_roles": roles,
        "how_to_approve": how,
        "audit_id": _audit_id(result),
    }
    text = f"approval.required: {tool} needs a human approval (approval id {approval_id})"
    if decision is not None and decision.reason:
        text += f", policy rule {decision.rule_id!r}: {decision.reason}"
    text += f". {note + ' ' if note else ''}To proceed, {how}"
    return _error(text, payload)


def _audit_id(result: Result) -> JsonValue:
    audit_id = result.audit_id
    return audit_id if audit_id is None or isinstance(audit_id, int | str) else str(audit_id)


def tool_result(
    spec: CapabilitySpec | None,
    result: Result,
    tool: str,
    *,
    status_tool: str = APPROVAL_STATUS_TOOL,
) -> types.CallToolResult:
    """Turn an invocation result into a tool result (``tool``: the name the client lists)."""
    decision = result.decision
    if result.status is Status.OK:
        return ok_result(
            spec,
            result.output,
            audit_id=_audit_id(result),
            decision=decision.decision.value if decision else None,
            rule_id=decision.rule_id if decision else None,
        )
    if result.status is Status.PENDING_APPROVAL:
        return pending_result(result, tool, status_tool=status_tool)
    error = result.error
    if error is None:
        error = AifrError(f"{tool} ended with status {result.status} and no error")
    extra: dict[str, JsonValue] = {"status": str(result.status), "audit_id": _audit_id(result)}
    if decision is not None:
        extra["rule_id"] = decision.rule_id
        extra["reason"] = decision.reason
    return error_result(error, **extra)
