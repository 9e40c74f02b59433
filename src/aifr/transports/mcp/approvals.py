"""Human approval from inside the MCP client: elicitation, or a pending result.

When a call needs approval and the client can show forms (elicitation), the human at
the client is asked to approve or reject. Their answer is recorded through the
runtime's approvals service as the approval of the session's *operator* (or, without
one, of the caller itself), and only if the policy lets that principal approve this
request; nobody approves their own request, so a refusal comes back as a clear tool
error and the approval stays pending for someone who may grant it.

Two protocol eras are served. Up to 2025-11-25 the server sends ``elicitation/create``
and waits for the answer within the call. On 2026-07-28 the call returns an
``InputRequiredResult`` holding the form; the client retries the call with the answer
and the (sealed) ``requestState`` that names the approval.

A client without elicitation gets a structured pending result with the approval id
and how to approve it, and can poll the ``aifr.approvals.status`` tool.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from pydantic import JsonValue

from aifr.errors import AifrError, ApprovalError, ErrorCode
from aifr.invocation import ApprovalService, Result
from aifr.transports.mcp.auth import McpIdentity
from aifr.transports.mcp.results import error_result, pending_result
from aifr.transports.mcp.tools import APPROVAL_STATUS_TOOL

__all__ = [
    "APPROVAL_INPUT_KEY",
    "APPROVAL_SCHEMA",
    "ApprovalBridge",
    "supports_form_elicitation",
]

logger = logging.getLogger(__name__)

APPROVAL_INPUT_KEY = "aifr_approval"
APPROVAL_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {
        "decision": {
            "type": "string",
            "title": "Decision",
            "enum": ["approve", "reject"],
            "description": "Approve to run the request now, reject to refuse it.",
        },
        "comment": {"type": "string", "title": "Comment", "description": "Optional note."},
    },
    "required": ["decision"],
}
_MAX_SHOWN_ARGUMENTS = 600

Reinvoke = Callable[[str], Awaitable[types.CallToolResult]]


def supports_form_elicitation(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether the client declared form-mode elicitation for this session or request."""
    capability = ctx.session.client_capabilities
    elicitation = capability.elicitation if capability is not None else None
    if elicitation is None:
        return False
    # An empty elicitation capability ({}) predates modes and means form support.
    return elicitation.form is not None or elicitation.url is None


@dataclass(frozen=True, slots=True)
class _Answer:
    action: str
    decision: str | None
    comment: str


def _answer(result: types.ElicitResult) -> _Answer:
    content = result.content or {}
    decision = content.get("decision")
    comment = content.get("comment")
    return _Answer(
        action=result.action,
        decision=decision if isinstance(decision, str) else None,
        comment=comment if isinstance(comment, str) else "",
    )


class ApprovalBridge:
    """Turns a ``pending_approval`` invocation result into a question or a pending result."""

    def __init__(self, approvals: ApprovalService) -> None:
        self._approvals = approvals

    def message(
        self, tool: str, arguments: dict[str, JsonValue], result: Result, who: McpIdentity
    ) -> str:
        """The sentence shown to the human at the client."""
        shown = json.dumps(arguments, sort_keys=True, default=str)
        if len(shown) > _MAX_SHOWN_ARGUMENTS:
            shown = shown[:_MAX_SHOWN_ARGUMENTS] + "..."
        decision = result.decision
        why = f" Policy rule {decision.rule_id!r}: {decision.reason}." if decision else ""
        return (
            f"aifr: {who.principal} asks to run {tool} with {shown}.{why} "
            f"Your answer is recorded as the approval of {who.approver!r} "
            f"(approval id {result.approval_id})."
        )

    async def on_pending(
        self,
        ctx: ServerRequestContext[Any, Any],
        *,
        tool: str,
        arguments: dict[str, JsonValue],
        result: Result,
        who: McpIdentity,
        reinvoke: Reinvoke,
        status_tool: str = APPROVAL_STATUS_TOOL,
    ) -> types.CallToolResult | types.InputRequiredResult:
        """Ask the human when the client can show a form; otherwise report pending."""
        approval_id = result.approval_id
        if approval_id is None or not supports_form_elicitation(ctx):
            return pending_result(result, tool, status_tool=status_tool)
        message = self.message(tool, arguments, result, who)
        if not ctx.session.can_send_request:
            return types.InputRequiredResult(
                input_requests={
                    APPROVAL_INPUT_KEY: types.ElicitRequest(
                        params=types.ElicitRequestFormParams(
                            message=message, requested_schema=dict(APPROVAL_SCHEMA)
                        )
                    )
                },
                request_state=approval_id,
            )
        answered = await ctx.session.elicit_form(
            message, dict(APPROVAL_SCHEMA), related_request_id=ctx.request_id
        )
        answer = _answer(answered)
        decided = await self.decide(approval_id, answer, tool=tool, who=who, reinvoke=reinvoke)
        if decided is not None:
            return decided
        return pending_result(result, tool, note=_unrecorded(answer), status_tool=status_tool)

    async def on_answer(
        self,
        params: types.CallToolRequestParams,
        *,
        approval_id: str,
        who: McpIdentity,
        reinvoke: Reinvoke,
    ) -> types.CallToolResult | None:
        """Handle the retried call carrying the client's answer (2026-07-28).

        Returns ``None`` when the request stays pending (form declined or dismissed).
        """
        response = (params.input_responses or {}).get(APPROVAL_INPUT_KEY)
        if not isinstance(response, types.ElicitResult):
            return None
        return await self.decide(
            approval_id, _answer(response), tool=params.name, who=who, reinvoke=reinvoke
        )

    def unrecorded(
        self,
        params: types.CallToolRequestParams,
        result: Result,
        tool: str,
        *,
        status_tool: str = APPROVAL_STATUS_TOOL,
    ) -> types.CallToolResult:
        """The pending result of a retried call whose answer recorded nothing (2026-07-28).

        It says why, as the same answer during the call does up to 2025-11-25.
        """
        response = (params.input_responses or {}).get(APPROVAL_INPUT_KEY)
        note = (
            _unrecorded(_answer(response))
            if isinstance(response, types.ElicitResult)
            else "The call came back without an answer to the approval form; nothing was recorded."
        )
        return pending_result(result, tool, note=note, status_tool=status_tool)

    async def decide(
        self,
        approval_id: str,
        answer: _Answer,
        *,
        tool: str,
        who: McpIdentity,
        reinvoke: Reinvoke,
    ) -> types.CallToolResult | None:
        """Record the human's answer, then run the approved request or report why not.

        Returns ``None`` when the form was declined or dismissed: nothing is recorded
        and the request stays pending.
        """
        if answer.action != "accept" or answer.decision not in ("approve", "reject"):
            return None
        try:
            if answer.decision == "reject":
                await self._approvals.areject(
                    approval_id,
                    who.approver,
                    reason=answer.comment,
                    authenticated=who.authenticated,
                )
                return error_result(
                    ApprovalError(
                        f"{who.approver} rejected the request to run {tool} "
                        f"(approval id {approval_id})",
                        code=ErrorCode.APPROVAL_REJECTED,
                        approval_id=approval_id,
                    ),
                    status="rejected",
                )
            await self._approvals.aapprove(
                approval_id, who.approver, comment=answer.comment, authenticated=who.authenticated
            )
        except ApprovalError as exc:
            logger.info("approval %s refused for %s: %s", approval_id, who.approver, exc.code)
            return _refusal(exc, approval_id=approval_id, approver=who.approver)
        return await reinvoke(approval_id)


def _unrecorded(answer: _Answer) -> str:
    """Why an answered approval form recorded nothing, for the pending result's text."""
    if answer.action != "accept":
        return f"The approval form was answered with {answer.action!r}; nothing was recorded."
    if answer.decision is None:
        return "The approval form came back without a decision; nothing was recorded."
    return (
        f"The approval form's decision was {answer.decision!r}, neither 'approve' nor "
        "'reject'; nothing was recorded."
    )


def _refusal(error: AifrError, *, approval_id: str, approver: str) -> types.CallToolResult:
    refusal = ApprovalError(
        f"your answer was not recorded: {approver} may not approve this request "
        f"({error.message}); approval {approval_id} is still pending until someone the "
        f"policy allows runs 'aifr approvals approve {approval_id} --as THEIR_NAME'",
        code=error.code,
        approval_id=approval_id,
        approver=approver,
    )
    return error_result(refusal, status="pending_approval", approval_id=approval_id)
