"""``Result``: what every governed invocation returns, whatever happened.

A result is ``ok``, ``denied``, ``pending_approval`` or ``failed``. It carries the
output (``ok`` only), the error (everything else), the policy decision, the audit record
id and timing. ``to_dict()`` is the JSON shape the CLI prints and the idempotency store
keeps; ``from_dict()`` reads it back for a replayed call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

from pydantic import JsonValue

from aifr.errors import AifrError, ErrorCode, error_payload
from aifr.frozen import fast_init
from aifr.policy import Decision, PolicyDecision

__all__ = ["HookFailure", "Result", "Status", "Timing", "decision_from_dict", "decision_to_dict"]


class Status(StrEnum):
    """The four ways an invocation ends."""

    OK = "ok"
    DENIED = "denied"
    PENDING_APPROVAL = "pending_approval"
    FAILED = "failed"


@fast_init
@dataclass(frozen=True, slots=True)
class Timing:
    """When the call started (epoch seconds) and how long each stage took (seconds)."""

    started_at: float
    total_s: float
    stages: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON form, durations in seconds."""
        return {
            "started_at": self.started_at,
            "total_s": self.total_s,
            "stages": cast(JsonValue, dict(self.stages)),
        }


@dataclass(frozen=True, slots=True)
class HookFailure:
    """A hook that raised or timed out; recorded, never fatal to the invocation."""

    hook: str
    stage: str
    scope: str
    code: str
    message: str
    attempts: int

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON form."""
        return {
            "hook": self.hook,
            "stage": self.stage,
            "scope": self.scope,
            "code": self.code,
            "message": self.message,
            "attempts": self.attempts,
        }


def decision_to_dict(decision: PolicyDecision) -> dict[str, JsonValue]:
    """The JSON form of a policy decision, as results and audit details show it."""
    return {
        "decision": decision.decision.value,
        "rule_id": decision.rule_id,
        "reason": decision.reason,
        "approver_roles": list[JsonValue](sorted(decision.approver_roles)),
        "quorum": decision.quorum,
        "approval_ttl_s": decision.approval_ttl_s,
        "grant_id": decision.grant_id,
        "quorum_roles": dict(decision.quorum_roles),
    }


def decision_from_dict(data: dict[str, Any]) -> PolicyDecision:
    """Rebuild a :class:`PolicyDecision` from :func:`decision_to_dict` output."""
    return PolicyDecision(
        decision=Decision(data["decision"]),
        rule_id=data.get("rule_id"),
        reason=data.get("reason") or "",
        approver_roles=tuple(data.get("approver_roles") or ()),
        quorum=int(data.get("quorum") or 1),
        approval_ttl_s=data.get("approval_ttl_s"),
        grant_id=data.get("grant_id"),
        quorum_roles=tuple(sorted((data.get("quorum_roles") or {}).items())),
    )


@fast_init
@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one governed invocation.

    ``error`` is set for every status but ``ok``: a ``PolicyDeniedError`` when denied,
    an ``ApprovalError`` (``approval.required``) while pending, and the stage's own
    error when failed. ``replayed`` is true when an idempotency key returned a stored
    result without executing again.
    """

    status: Status
    request_id: str
    capability_id: str
    principal: str
    output: JsonValue = None
    error: AifrError | None = None
    decision: PolicyDecision | None = None
    audit_id: int | str | None = None
    audit_seq: int | None = None
    approval_id: str | None = None
    capability_version: str | None = None
    fingerprint: str | None = None
    trace_id: str | None = None
    circuit: str = "closed"
    replayed: bool = False
    timing: Timing | None = None
    hook_failures: tuple[HookFailure, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the capability ran and its output is valid."""
        return self.status is Status.OK

    @property
    def error_code(self) -> ErrorCode | None:
        """The error's code, or ``None`` for an ``ok`` result."""
        return self.error.code if self.error is not None else None

    @property
    def error_payload(self) -> dict[str, JsonValue] | None:
        """The one error payload (:func:`aifr.errors.error_payload`), or ``None``."""
        return error_payload(self.error) if self.error is not None else None

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON form: what ``aifr call --json`` prints and idempotency replays."""
        payload = self.error_payload
        return {
            "status": self.status.value,
            "ok": self.ok,
            "request_id": self.request_id,
            "trace_id": self.trace_id,
            "capability_id": self.capability_id,
            "capability_version": self.capability_version,
            "fingerprint": self.fingerprint,
            "principal": self.principal,
            "output": self.output,
            "error": payload["error"] if payload is not None else None,
            "decision": decision_to_dict(self.decision) if self.decision else None,
            "audit_id": self.audit_id,
            "audit_seq": self.audit_seq,
            "approval_id": self.approval_id,
            "circuit": self.circuit,
            "replayed": self.replayed,
            "timing": self.timing.to_dict() if self.timing else None,
            "hook_failures": [f.to_dict() for f in self.hook_failures],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, replayed: bool = False) -> Result:
        """Rebuild a result from :meth:`to_dict` output (the error keeps code and details)."""
        error_data = data.get("error")
        error = None
        if error_data:
            error = AifrError(str(error_data["message"]), code=ErrorCode(error_data["code"]))
            error.details = dict(error_data.get("details") or {})
        timing = data.get("timing")
        return cls(
            status=Status(data["status"]),
            request_id=str(data["request_id"]),
            trace_id=data.get("trace_id"),
            capability_id=str(data["capability_id"]),
            capability_version=data.get("capability_version"),
            fingerprint=data.get("fingerprint"),
            principal=str(data["principal"]),
            output=data.get("output"),
            error=error,
            decision=decision_from_dict(data["decision"]) if data.get("decision") else None,
            audit_id=data.get("audit_id"),
            audit_seq=data.get("audit_seq"),
            approval_id=data.get("approval_id"),
            circuit=str(data.get("circuit") or "closed"),
            replayed=replayed,
            timing=Timing(
                started_at=float(timing["started_at"]),
                total_s=float(timing["total_s"]),
                stages={str(k): float(v) for k, v in timing["stages"].items()},
            )
            if timing
            else None,
            hook_failures=tuple(HookFailure(**f) for f in data.get("hook_failures") or ()),
        )
