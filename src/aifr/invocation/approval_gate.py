"""The policy and approval stages of the pipeline.

``ApprovalGate.decide`` asks the policy engine (which also turns ALLOW into
REQUIRE_APPROVAL for a spec with ``risk.requires_approval``); ``require`` either stores a new approval request
and stops the call as ``pending_approval``, or consumes the approval the call names,
so the request runs once. A stage that ends the call raises :class:`Stop`.
"""

from __future__ import annotations

from aifr.audit import AuditEvent
from aifr.capabilities.secret_syntax import has_secret_refs, secret_names
from aifr.errors import ApprovalError, ErrorCode, PolicyDeniedError
from aifr.invocation.approvals import ApprovalService, request_digest
from aifr.invocation.execution import Executor
from aifr.invocation.records import Call, Outcome, audit_event
from aifr.invocation.result import Status
from aifr.policy import PolicyDecision, PolicyEngine, PolicyRequest

__all__ = ["ApprovalGate", "Stop"]

_RATE_LIMIT_PREFIX = "rate_limit:"
_NONE: frozenset[str] = frozenset()


class Stop(Exception):  # noqa: N818  # internal control flow, never leaves the runtime
    """A stage ended the call early with this outcome."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.status)
        self.outcome = outcome


def _pending_error(call: Call, approval_id: str) -> ApprovalError:
    return ApprovalError(
        f"{call.capability_id} needs a human approval (approval id {approval_id}); once "
        f"approved, run 'aifr approvals execute {approval_id}'",
        code=ErrorCode.APPROVAL_REQUIRED,
        approval_id=approval_id,
        capability_id=call.capability_id,
    )


def pending(call: Call, approval_id: str) -> Outcome:
    """The outcome of a call waiting for approval ``approval_id``."""
    return Outcome(
        Status.PENDING_APPROVAL, error=_pending_error(call, approval_id), approval_id=approval_id
    )


class ApprovalGate:
    """Policy decision, denial and the approval gate of one runtime."""

    def __init__(self, policy: PolicyEngine, approvals: ApprovalService | None) -> None:
        self._policy = policy
        self._approvals = approvals

    def decide(self, call: Call) -> PolicyDecision:
        """The policy's decision for the call (a rate limit comes back as DENY)."""
        spec = call.spec
        assert spec is not None  # noqa: S101  # resolved before the policy stage
        return self._policy.decide(
            PolicyRequest(
                principal=call.principal,
                capability=spec,
                inputs=call.inputs if call.validated_inputs is None else call.validated_inputs,
                roles=call.roles,
                workflow_id=call.workflow_id,
                on_behalf_of=call.on_behalf_of,
                secrets=secret_names(call.inputs) if has_secret_refs(call.inputs) else _NONE,
            )
        )

    @staticmethod
    def denial(call: Call, decision: PolicyDecision) -> PolicyDeniedError:
        """The error of a DENY decision, naming the rule and its reason.

        A rate limit (rule ``rate_limit:NAME``) gets its own code, ``policy.rate_limited``.
        """
        rule = decision.rule_id or "default"
        limited = rule.startswith(_RATE_LIMIT_PREFIX)
        return PolicyDeniedError(
            f"{call.principal} may not call {call.capability_id}: "
            f"{decision.reason or 'denied by policy'} (rule {rule})",
            code=ErrorCode.POLICY_RATE_LIMITED if limited else ErrorCode.POLICY_DENIED,
            capability_id=call.capability_id,
            principal=call.principal,
            rule_id=decision.rule_id,
            reason=decision.reason,
        )

    async def require(self, call: Call, ex: Executor) -> None:
        """Let an approved call through once, or stop it as pending.

        Raises:
            Stop: a new or still-pending approval request.
            ApprovalError: no approval store, or the named approval cannot be used.
        """
        spec = call.spec
        approvals = self._approvals
        assert spec is not None  # noqa: S101  # resolved before the approval stage
        if approvals is None:
            raise ApprovalError(
                f"{spec.id} needs a human approval, but this runtime has no approval store",
                capability_id=spec.id,
            )
        digest_value = request_digest(
            capability_id=spec.id,
            fingerprint=spec.fingerprint,
            inputs=call.inputs,
            principal=call.principal,
        )
        approval_id = call.approval_id
        if approval_id is None:
            raise Stop(await ex.blocking(self._request, approvals, call, digest_value))
        try:
            await ex.blocking(
                lambda: approvals.consume(
                    approval_id, digest_value=digest_value, request_id=call.context.request_id
                )
            )
        except ApprovalError as exc:
            if exc.code is not ErrorCode.APPROVAL_REQUIRED:
                raise
            raise Stop(pending(call, approval_id)) from None
        call.consumed_approval = approval_id

    @staticmethod
    def _request(approvals: ApprovalService, call: Call, digest_value: str) -> Outcome:
        spec = call.spec
        decision = call.decision
        assert spec is not None and decision is not None  # noqa: S101  # decided before

        def audit_for(approval_id: str) -> AuditEvent:
            return audit_event(call, pending(call, approval_id), call.circuit)

        record, audit_record = approvals.request(
            spec=spec,
            inputs=call.inputs,
            principal=call.principal,
            roles=call.roles,
            decision=decision,
            digest_value=digest_value,
            request_id=call.context.request_id,
            audit_for=audit_for,
            workflow_id=call.workflow_id,
            on_behalf_of=call.on_behalf_of,
            idempotency_key=call.idempotency_key,
        )
        outcome = pending(call, record.id)
        outcome.audit = audit_record
        return outcome
