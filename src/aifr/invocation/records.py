"""Per-call state of the pipeline, how a call ended, and the audit event it appends.

``Call`` is the mutable bag one invocation carries from stage to stage; ``Outcome`` is
how it ended (before auditing); ``audit_event`` turns both into the one
:class:`~aifr.audit.AuditEvent` the invocation appends. Inputs never enter the event:
only their digest (``secret://`` references unresolved) and the redacted error do.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ConfigDict, JsonValue, TypeAdapter

from aifr.audit import AuditEvent, AuditLedger, AuditRecord, EventTemplate
from aifr.capabilities import Capability, CapabilitySpec, digest
from aifr.errors import AifrError, AuditError, FieldError, InputValidationError, error_payload
from aifr.invocation.circuit import CircuitState
from aifr.invocation.context import (
    FINDINGS_AUDIT_KEY,
    SANDBOX_AUDIT_KEY,
    UPSTREAM_AUDIT_KEY,
    RequestContext,
)
from aifr.invocation.hooks import Hooks
from aifr.invocation.identity import INVALID_PRINCIPAL
from aifr.invocation.options import CallOptions
from aifr.invocation.ports import ForeseesCompletions
from aifr.invocation.result import HookFailure, Result, Status, Timing, decision_to_dict
from aifr.invocation.secret_refs import Redactor
from aifr.observability.traceparent import parse_traceparent
from aifr.policy import PolicyDecision

__all__ = [
    "NO_SECRETS",
    "Call",
    "Outcome",
    "audit_event",
    "build_result",
    "ended_as_foreseen",
    "finished_event",
    "finished_stored_result",
    "foresee_ok_result",
    "inputs_digest",
    "new_call",
    "prefigure_ok",
    "stored_result",
]

# NaN and infinities stay floats (and are then refused), instead of becoming null.
_ANY: TypeAdapter[Any] = TypeAdapter(Any, config=ConfigDict(ser_json_inf_nan="constants"))
_perf = time.perf_counter

NO_SECRETS = Redactor()

_EMPTY_DIGEST = digest({})


def inputs_digest(inputs: Any) -> str:
    """SHA-256 of the canonical inputs; non-JSON values are first reduced to JSON form.

    Approvals and idempotency keys are bound to this digest, so it must never give two
    different requests one value: inputs JSON cannot hold exactly are refused.

    Raises:
        InputValidationError: the inputs hold NaN or an infinity, an integer past
            Python's digit limit, nesting too deep to encode, a container holding
            itself, or a value of a type with no JSON form.
    """
    if not inputs and type(inputs) is dict:
        return _EMPTY_DIGEST
    try:
        try:
            return digest(inputs)
        except TypeError:  # dates, sets, models...: digest their JSON form
            return digest(_ANY.dump_python(inputs, mode="json"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InputValidationError(
            "inputs hold a value JSON cannot encode exactly",
            errors=[
                FieldError(
                    path="",
                    code="invalid",
                    message=f"inputs hold a value JSON cannot encode exactly ({type(exc).__name__})",
                    expected="JSON values (finite numbers, at most 4,300 digits, bounded nesting)",
                    received=type(inputs).__name__,
                )
            ],
        ) from None


def _recorded_digest(call: Call) -> str | None:
    """The digest an audit record carries; ``None`` for inputs refused as unencodable."""
    if call.digest:
        return call.digest
    try:
        return inputs_digest(call.inputs)
    except InputValidationError:
        return None


@dataclass(slots=True)
class Call:
    """Everything one invocation knows, filled in as the stages run."""

    ref: str
    inputs: dict[str, Any]
    principal: str
    context: RequestContext
    roles: frozenset[str]
    on_behalf_of: tuple[str, ...]
    idempotency_key: str | None
    approval_id: str | None
    workflow_id: str | None
    run_id: str | None
    step_id: str | None
    timeout_s: float | None
    hooks: Hooks | None
    started: float = field(default_factory=_perf)
    mark: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    capability: Capability | None = None
    decision: PolicyDecision | None = None
    validated_inputs: dict[str, Any] | None = None
    digest: str = ""
    circuit: str = CircuitState.CLOSED
    is_trial: bool = False
    executed: bool = False
    has_hooks: bool = False
    claimed_key: bool = False
    consumed_approval: str | None = None
    redactor: Redactor = NO_SECRETS
    hook_failures: tuple[HookFailure, ...] = ()
    principal_refused: bool = False
    parent_span_id: str | None = None
    prefigured: EventTemplate | None = None
    """The audit event of an ``ok`` end, encoded before the effect (see :func:`prefigure_ok`)."""
    foreseen_result: dict[str, JsonValue] | None = None
    """The stored result of an ``ok`` end, built before the effect (see :func:`foresee_ok_result`)."""

    @property
    def spec(self) -> CapabilitySpec | None:
        """The resolved spec, once resolution succeeded."""
        capability = self.capability
        return capability.spec if capability is not None else None

    @property
    def capability_id(self) -> str:
        """The resolved id, or the id part of the reference as given."""
        capability = self.capability
        if capability is not None:
            return capability.spec.id
        return self.ref.partition("@")[0].strip()

    def lap(self, stage: str) -> None:
        """Record the time since the previous lap under ``stage``."""
        now = _perf()
        self.stages[stage] = now - (self.mark or self.started)
        self.mark = now


@dataclass(slots=True)
class Outcome:
    """How a call ended, before its audit record and timing are attached."""

    status: Status
    output: JsonValue = None
    error: AifrError | None = None
    approval_id: str | None = None
    audit: AuditRecord | None = None
    replay: Result | None = None


_HANDLER_REPORTS = (
    (SANDBOX_AUDIT_KEY, "sandbox"),  # what the process sandbox did: backend, refusals
    (UPSTREAM_AUDIT_KEY, "upstream"),  # a gateway call: which MCP server answered, its version
    (FINDINGS_AUDIT_KEY, "findings"),  # a findings change: the import's counts, the resource
)
"""What a handler may leave for its audit record: the context key, and the detail it becomes."""


def _has_handler_reports(call: Call) -> bool:
    """Whether a handler left anything for its audit record (see :data:`_HANDLER_REPORTS`)."""
    context = call.context
    return any(context.get(key) is not None for key, _ in _HANDLER_REPORTS)


def _add_handler_reports(call: Call, details: dict[str, JsonValue]) -> None:
    """What a handler left for its audit record, each under its detail's name."""
    context = call.context
    for key, name in _HANDLER_REPORTS:
        report = context.get(key)
        if report is not None:
            details[name] = report


def _duration_s(call: Call) -> float:
    """How long ``call`` has run, as its audit record keeps it (µs precision)."""
    return round(_perf() - call.started, 6)


def audit_event(call: Call, outcome: Outcome, circuit: str, kind: str = "invocation") -> AuditEvent:
    """The audit event recording ``call`` and how it ended."""
    spec = call.spec
    decision = call.decision
    error = outcome.error
    details: dict[str, JsonValue] = {
        "status": outcome.status,
        "version": spec.version if spec is not None else None,
        "error": error_payload(error)["error"] if error is not None else None,
        "circuit": circuit,
        "duration_s": _duration_s(call),
    }
    if decision is not None and decision.reason:
        details["reason"] = decision.reason
    if outcome.approval_id:
        details["approval_id"] = outcome.approval_id
    if call.idempotency_key:
        details["idempotency_key"] = call.idempotency_key
    if call.roles:
        details["roles"] = list[JsonValue](sorted(call.roles))
    if call.on_behalf_of:
        details["on_behalf_of"] = list(call.on_behalf_of)
    if call.workflow_id:
        details["workflow_id"] = call.workflow_id
    if call.step_id:
        details["step_id"] = call.step_id
    if call.hook_failures:
        details["hook_failures"] = [f.to_dict() for f in call.hook_failures]
    if outcome.replay is not None:
        details["replayed_request_id"] = outcome.replay.request_id
    _add_handler_reports(call, details)
    principal = call.principal
    if call.principal_refused:  # no name to key the record on: nothing ran
        details["principal_given"] = repr(principal)[:80]
        principal = INVALID_PRINCIPAL
    return AuditEvent(
        kind=kind,
        principal=principal,
        capability_id=call.capability_id,
        capability_fingerprint=spec.fingerprint if spec is not None else None,
        decision=decision.decision.value if decision is not None else None,
        rule_id=decision.rule_id if decision is not None else None,
        inputs_digest=_recorded_digest(call),
        outcome="ok" if error is None else error.code.value,
        trace_id=call.context.trace_id,
        request_id=call.context.request_id,
        run_id=call.run_id,
        details=call.redactor.scrub(details) if call.redactor else details,
    )


PREFIGURED_SLOT = "duration_s"
"""The one detail of an ``ok`` invocation's event not known before its effect."""

_OK = Outcome(Status.OK)


def prefigure_ok(call: Call, ledger: AuditLedger) -> EventTemplate | None:
    """The event of ``call`` ending ``ok``, redacted and encoded now, before its effect.

    For a caller with time to spare before the effect (a workflow step's, while the
    previous step's commit flushes): after the effect :func:`finished_event` only fills
    in the duration. ``None`` when the event cannot be left open that way, or is not
    JSON-safe: built after the effect as usual, its append then fails where it always
    did, not before the effect.
    """
    try:
        return ledger.prefigure(audit_event(call, _OK, CircuitState.CLOSED), PREFIGURED_SLOT)
    except AuditError:
        return None


def finished_event(
    call: Call, outcome: Outcome, circuit: str, kind: str = "invocation", *, foreseen: bool
) -> AuditEvent:
    """:func:`audit_event`, filled in from ``call.prefigured`` when the call ended as foreseen.

    ``foreseen``: :func:`ended_as_foreseen`'s answer for this end, asked once by the
    caller for both the event and :func:`finished_stored_result`. Anything else is
    built afresh.
    """
    template = call.prefigured
    if template is None or not foreseen:
        return audit_event(call, outcome, circuit, kind)
    return template.filled(_duration_s(call))


def foresee_ok_result(call: Call, store: ForeseesCompletions) -> dict[str, JsonValue]:
    """The result ``call`` would store ending ``ok``, built now and handed to ``store``.

    For the caller that prefigured the call's event (:func:`prefigure_ok`), with time
    to spare before the effect: everything a stored result holds but the output is
    known by then, and ``store`` encodes it while the previous commit flushes. After
    the effect :func:`finished_stored_result` fills in the output.
    """
    key = call.idempotency_key
    assert key is not None  # noqa: S101  # only claimed calls are foreseen
    result = stored_result(call, _OK, CircuitState.CLOSED)
    store.foresee(call.principal, key, result)
    return result


def finished_stored_result(
    call: Call, outcome: Outcome, circuit: str, *, foreseen: bool
) -> dict[str, JsonValue]:
    """:func:`stored_result`, the foreseen one with its output when the call ended as foreseen.

    ``foreseen`` is the same answer :func:`finished_event` was given, so the foreseen
    result is used exactly when the prefigured event is.
    """
    result = call.foreseen_result
    if result is None or not foreseen:
        return stored_result(call, outcome, circuit)
    result["output"] = outcome.output
    return result


def ended_as_foreseen(call: Call, outcome: Outcome, circuit: str, kind: str) -> bool:
    """Whether ``call`` was prefigured and ended as its template and foreseen result assumed.

    Foreseen: ``ok``, the circuit closed, and nothing the effect could add to the
    details (no resolved secret to scrub, no handler report, no hook failure, no
    approval or replay).
    """
    return (
        call.prefigured is not None
        and kind == "invocation"
        and outcome.status is Status.OK
        and outcome.error is None
        and outcome.approval_id is None
        and outcome.replay is None
        and circuit == CircuitState.CLOSED
        and not call.redactor
        and not call.hook_failures
        and not _has_handler_reports(call)
    )


def build_result(
    call: Call,
    outcome: Outcome,
    circuit: str,
    record: AuditRecord | None,
    *,
    timed: bool = False,
) -> Result:
    """The one :class:`Result` of a call (with timing once the call is over)."""
    spec = call.spec
    context = call.context
    return Result(
        status=outcome.status,
        request_id=context.request_id,
        capability_id=call.capability_id,
        principal=call.principal,
        output=outcome.output,
        error=outcome.error,
        decision=call.decision,
        audit_id=record.id if record is not None else None,
        audit_seq=record.seq if record is not None else None,
        approval_id=outcome.approval_id,
        capability_version=spec.version if spec is not None else None,
        fingerprint=spec.fingerprint if spec is not None else None,
        trace_id=context.trace_id,
        circuit=circuit,
        timing=Timing(context.created_at, _perf() - call.started, call.stages) if timed else None,
        hook_failures=call.hook_failures,
    )


def stored_result(call: Call, outcome: Outcome, circuit: str) -> dict[str, JsonValue]:
    """``build_result(call, outcome, circuit, None).to_dict()``, without the ``Result``.

    What an idempotency or approval store keeps of a finished call, built straight as
    the JSON object (the same keys in the same order; a unit test pins the two equal):
    this runs on every keyed call, a workflow step's included.
    """
    spec = call.spec
    context = call.context
    decision = call.decision
    error = outcome.error
    return {
        "status": outcome.status.value,
        "ok": outcome.status is Status.OK,
        "request_id": context.request_id,
        "trace_id": context.trace_id,
        "capability_id": call.capability_id,
        "capability_version": spec.version if spec is not None else None,
        "fingerprint": spec.fingerprint if spec is not None else None,
        "principal": call.principal,
        "output": outcome.output,
        "error": error_payload(error)["error"] if error is not None else None,
        "decision": decision_to_dict(decision) if decision else None,
        "audit_id": None,
        "audit_seq": None,
        "approval_id": outcome.approval_id,
        "circuit": circuit,
        "replayed": False,
        "timing": None,
        "hook_failures": [f.to_dict() for f in call.hook_failures],
    }


def new_call(
    ref: str, inputs: Mapping[str, Any] | None, principal: str, options: CallOptions
) -> Call:
    """A fresh call with its request context; ``inputs`` and ``roles`` are normalized."""
    roles = options.roles
    run_id, step_id = options.run_id, options.step_id
    trace_id, parent_span_id = options.trace_id, None
    if options.traceparent is not None:
        parent = parse_traceparent(options.traceparent)
        if parent is not None:
            trace_id = trace_id or parent.trace_id
            parent_span_id = parent.span_id
    return Call(
        ref=ref,
        inputs=inputs if type(inputs) is dict else dict(inputs or {}),
        principal=principal,
        context=RequestContext(
            principal=principal,
            capability_ref=ref,
            trace_id=trace_id,
            run_id=run_id,
            step_id=step_id,
        ),
        roles=roles if type(roles) is frozenset else frozenset(roles),
        on_behalf_of=tuple(options.on_behalf_of),
        idempotency_key=options.idempotency_key,
        approval_id=options.approval_id,
        workflow_id=options.workflow_id,
        run_id=run_id,
        step_id=step_id,
        timeout_s=options.timeout_s,
        hooks=options.hooks,
        parent_span_id=parent_span_id,
    )
