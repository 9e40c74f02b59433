"""``Runtime``: the one governed path every action takes.

resolve -> validate inputs -> policy -> circuit -> approval gate -> before hooks ->
execute under a timeout -> validate output -> after hooks -> audit -> result.

``invoke`` and ``ainvoke`` run the same pipeline coroutine through two executors (see
:mod:`aifr.invocation.execution`). Every failure becomes a ``Result`` with a distinct
error code; the audit record is appended (durably) before the result is returned, in
the same transaction as the approval or idempotency state it goes with.

The pipeline is the hot path of aifr: it builds one ``Result``, touches no enum
``.value`` it can avoid, resolves references through a cache and skips hooks, events
and secrets entirely when none are in play.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextvars import Token
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from aifr.audit import AuditLedger, AuditRecord
from aifr.capabilities import CallInfo, Capability, CapabilityRegistry
from aifr.errors import (
    AifrError,
    ApprovalError,
    ErrorCode,
    ExecutionError,
    ExecutionTimeoutError,
    FieldError,
    InputValidationError,
    UnconfirmedCommitError,
)
from aifr.invocation.approval_gate import ApprovalGate, Stop
from aifr.invocation.approvals import ApprovalService
from aifr.invocation.circuit import CircuitBreakers, CircuitState
from aifr.invocation.context import (
    GlobalContext,
    Phase,
    RequestContext,
    bind_request,
    unbind_request,
)
from aifr.invocation.events import EventBus, EventKind, LifecycleEvent
from aifr.invocation.execution import (
    AsyncExecutor,
    BlockingExecutor,
    DeadlineExceeded,
    Executor,
    ExecutorPools,
    HandlerWatch,
    SyncExecution,
    WatchedExecutor,
    drive,
)
from aifr.invocation.hooks import HookCall, HookRegistry, HookStage, run_hooks
from aifr.invocation.idempotency import IdempotencyGuard
from aifr.invocation.identity import check_principal
from aifr.invocation.options import NO_OPTIONS, CallOptions
from aifr.invocation.ports import (
    CircuitStore,
    ForeseesCompletions,
    IdempotencyStore,
    SettlesCommits,
)
from aifr.invocation.records import (
    Call,
    Outcome,
    build_result,
    ended_as_foreseen,
    finished_event,
    finished_stored_result,
    foresee_ok_result,
    inputs_digest,
    new_call,
    prefigure_ok,
    stored_result,
)
from aifr.invocation.result import Result, Status
from aifr.invocation.secret_refs import SecretResolver, has_secret_refs
from aifr.observability import (
    bind_log_fields,
    bind_log_scrubber,
    unbind_log_fields,
    unbind_log_scrubber,
)
from aifr.policy import Decision, PolicyEngine

__all__ = ["Runtime"]

logger = logging.getLogger(__name__)

_perf = time.perf_counter

# Failures that say something about a capability's health (and so count for its circuit).
_HEALTH_CODES = frozenset(
    {ErrorCode.EXECUTION_FAILED, ErrorCode.EXECUTION_TIMEOUT, ErrorCode.OUTPUT_INVALID}
)


_Bound = tuple[Token[RequestContext | None], Token[Mapping[str, str] | None]]


def _bind(call: Call) -> _Bound:
    """Make ``call`` the current request, for handlers and for log records."""
    context = call.context
    return bind_request(context), bind_log_fields(
        request_id=context.request_id,
        trace_id=context.trace_id,
        principal=call.principal,
        run_id=call.run_id,
    )


def _unbind(bound: _Bound) -> None:
    request, fields = bound
    unbind_log_fields(fields)
    unbind_request(request)


def _timed_out(capability_id: str, timeout_s: float) -> ExecutionTimeoutError:
    return ExecutionTimeoutError(
        f"{capability_id} did not finish within its timeout of {timeout_s:g}s",
        capability_id=capability_id,
        timeout_s=timeout_s,
    )


class Runtime:
    """Invokes capabilities through policy, approval, limits and audit. Thread-safe.

    An explicit object (no globals): ``aifr.app`` builds one from settings. Close it
    with :meth:`close` (or use it as a context manager) to stop its pools and run the
    global context's shutdown hooks.
    """

    def __init__(
        self,
        registry: CapabilityRegistry,
        policy: PolicyEngine,
        ledger: AuditLedger,
        *,
        approvals: ApprovalService | None = None,
        idempotency: IdempotencyStore | None = None,
        circuit_store: CircuitStore | None = None,
        secrets: SecretResolver | None = None,
        hooks: HookRegistry | None = None,
        global_context: GlobalContext | None = None,
        default_timeout_s: float = 30.0,
        circuit_failure_threshold: int = 5,
        circuit_cooldown_s: float = 30.0,
        sync_execution: SyncExecution = "auto",
        handler_workers: int = 32,
    ) -> None:
        self.registry = registry
        self.policy = policy
        self.ledger = ledger
        self.approvals = approvals
        self.secrets = secrets or SecretResolver()
        self.hooks = hooks or HookRegistry()
        self.events = EventBus()
        self.global_context = global_context or GlobalContext()
        self.default_timeout_s = default_timeout_s
        self.circuits = CircuitBreakers(
            failure_threshold=circuit_failure_threshold,
            cooldown_s=circuit_cooldown_s,
            store=circuit_store,
        )
        self._gate = ApprovalGate(policy, approvals)
        self._idempotency = IdempotencyGuard(idempotency) if idempotency is not None else None
        self._settle_commits: Callable[[], None] = (
            idempotency.settle if isinstance(idempotency, SettlesCommits) else _nothing_to_settle
        )
        # Where a step's commit may still be flushing when the next step is checked, its
        # ``ok`` audit event is built then too (see aifr.audit.prefigure), not after the
        # effect, where each microsecond delays the step's own write.
        self._defers_commits: Callable[[], bool] = (
            idempotency.defers_commits if isinstance(idempotency, SettlesCommits) else _never
        )
        # There too the result such a step would store is built, and the store encodes it.
        self._foreseer: ForeseesCompletions | None = (
            idempotency if isinstance(idempotency, ForeseesCompletions) else None
        )
        self._pools = ExecutorPools(handler_workers=handler_workers)
        self._blocking = BlockingExecutor(self._pools, sync_execution)
        # Under "auto", a call that asks for a hard timeout runs as under "thread".
        self._hard = BlockingExecutor(self._pools, "thread")
        self._sync_execution = sync_execution
        self._async = AsyncExecutor(self._pools)
        self._resolved: dict[str, Capability] = {}
        self._registry_size = -1
        self.global_context.on_shutdown(self._pools.close, name="runtime.pools")

    # -- public API --------------------------------------------------------------------

    def invoke(
        self,
        ref: str,
        inputs: Mapping[str, Any] | None,
        principal: str,
        options: CallOptions = NO_OPTIONS,
    ) -> Result:
        """Run one governed invocation of ``ref`` (``id`` or ``id@version``) and wait for it.

        Never raises for a governed outcome: denial, pending approval and every
        failure come back as a :class:`Result` carrying the error and its code.
        ``options`` carries everything else about the call (roles, keys, approval,
        workflow ids, timeout, hooks, trace); ``ainvoke`` takes the same value.
        """
        call = new_call(ref, inputs, principal, options)
        ex = self._blocking
        if self._sync_execution == "auto" and self._wants_hard_timeout(call):
            ex = self._hard
        return drive(self._pipeline(call, ex))

    async def ainvoke(
        self,
        ref: str,
        inputs: Mapping[str, Any] | None,
        principal: str,
        options: CallOptions = NO_OPTIONS,
    ) -> Result:
        """:meth:`invoke` for asyncio code: the loop never blocks on handlers or storage.

        A sync handler takes the whole call to one handler-pool thread (policy, handler
        and audit append there, as :meth:`invoke` runs them): one thread hand-off. Under
        ``sync_execution = "thread"``, and under the default ``"auto"`` for a call that
        asks for a hard timeout, this loop watches the handler's deadline and ends the
        call itself if the handler overruns it; under ``"loop"`` the call runs on this
        loop with no hand-off, blocking it until it is audited.
        """
        call = new_call(ref, inputs, principal, options)
        capability = self._sync_capability(ref)
        if capability is None:
            return await self._pipeline(call, self._async)
        mode = self._sync_execution
        if mode == "auto":
            mode = "thread" if self._wants_hard_timeout(call, capability) else "inline"
        if mode == "loop":
            return drive(self._pipeline(call, self._blocking))
        if mode == "inline":
            return await self._async.in_handler_thread(
                self._pipeline(call, self._blocking), timeout_s=self._timeout_for(call, capability)
            )
        watch = HandlerWatch()
        timeout = self._timeout_for(call, capability)
        return await self._async.in_watched_thread(
            self._pipeline(call, WatchedExecutor(self._blocking, watch)),
            watch,
            timeout,
            lambda: self._end_at_deadline(call, timeout),
        )

    def execute_approved(self, approval_id: str) -> Result:
        """Run an approved request exactly once, as the principal who asked for it.

        The request is rebuilt from the approval (capability and version, inputs as
        given, principal, roles), so it matches the digest the approval is bound to;
        the approval gate then consumes it, and a second execution is refused.

        Raises:
            ApprovalError: this runtime has no approval store, or no such request.
        """
        if self.approvals is None:
            raise ApprovalError("this runtime has no approval store", approval_id=approval_id)
        record = self.approvals.get(approval_id)
        return self.invoke(
            f"{record.capability_id}@{record.capability_version}",
            record.inputs,
            record.principal,
            CallOptions(
                roles=frozenset(record.roles),
                on_behalf_of=record.on_behalf_of,
                workflow_id=record.workflow_id,
                approval_id=record.id,
            ),
        )

    def close(self) -> None:
        """Run shutdown hooks (newest first) and stop the runtime's pools."""
        self.global_context.shutdown()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the pipeline --------------------------------------------------------------------

    async def _pipeline(self, call: Call, ex: Executor) -> Result:
        bound = _bind(call)
        try:
            if self.events.has_observers:
                self._emit(
                    "invocation.started",
                    call,
                    trace_id=call.context.trace_id,
                    parent_span_id=call.parent_span_id,
                    principal=call.principal,
                )
            try:
                outcome = Outcome(Status.OK, output=await self._governed(call, ex))
            except Stop as stop:
                outcome = stop.outcome
            except UnconfirmedCommitError:
                raise  # the step before this one may not be recorded: this call never ran
            except AifrError as exc:
                outcome = Outcome(Status.FAILED, error=call.redactor.error(exc))
            return await self._finish(call, ex, outcome)
        finally:
            _unbind(bound)

    async def _governed(self, call: Call, ex: Executor) -> Any:
        context = call.context
        _check_principal(call)
        _check_idempotency_key(call)
        capability = self._resolve(call.ref)
        call.capability = capability
        spec = capability.spec
        context.capability_ref = spec.ref
        context.enter(Phase.RESOLVED)
        call.has_hooks = call.hooks is not None or not self.hooks.is_empty_for(spec.id)
        call.digest = inputs_digest(call.inputs)
        if call.idempotency_key and self._idempotency is not None:
            replay = await self._idempotency.replay(call, ex, self._timeout_for(call))
            if replay is not None:
                raise Stop(Outcome(replay.status, replay=replay))
        call.lap("resolve")
        kwargs = capability.validate_inputs(call.inputs)
        call.validated_inputs = capability.as_validated(call.inputs, kwargs)
        context.enter(Phase.VALIDATED)
        call.lap("validate")
        observed = self.events.has_observers
        deciding_from = time.time() if observed else 0.0
        decision = call.decision = self._gate.decide(call)
        context.enter(Phase.DECIDED)
        call.lap("policy")
        if observed:
            self._emit_decision(call, deciding_from)
        if decision.decision is Decision.DENY:
            raise Stop(Outcome(Status.DENIED, error=self._gate.denial(call, decision)))
        state = self.circuits.before_call(spec.id)
        if state is not CircuitState.CLOSED:
            call.circuit = state
            call.is_trial = state is CircuitState.HALF_OPEN
        if decision.decision is Decision.REQUIRE_APPROVAL:
            await self._await_approval(call, ex, observed=observed)
        context.enter(Phase.APPROVED)
        if call.idempotency_key and self._idempotency is not None:
            taken = await self._idempotency.claim(call, ex, self._timeout_for(call))
            if taken is not None:
                raise Stop(Outcome(taken.status, replay=taken))
        self._ready_to_act(call)
        if call.has_hooks:
            await self._hooks(call, ex, HookStage.BEFORE)
        context.enter(Phase.EXECUTING)
        raw = await self._execute(call, ex, capability, kwargs)
        context.enter(Phase.EXECUTED)
        call.lap("execute")
        output = capability.validate_output(raw)
        if call.redactor:
            output = call.redactor.scrub(output)
        call.lap("output")
        if call.has_hooks:
            await self._hooks(call, ex, HookStage.AFTER, output=output)
        return output

    def _ready_to_act(self, call: Call) -> None:
        """The last of the call before its effect: a previous step's commit confirmed.

        Before that wait, the event of an ``ok`` end is built and encoded (see
        :func:`prefigure_ok`), and the result it would store too (see
        :func:`foresee_ok_result`), where a commit may still be flushing: the time is
        free there, and each microsecond after the effect delays the step's own write.
        """
        if call.claimed_key and not call.has_hooks and self._defers_commits():
            call.prefigured = prefigure_ok(call, self.ledger)
            if call.prefigured is not None and self._foreseer is not None:
                call.foreseen_result = foresee_ok_result(call, self._foreseer)
        self._settle_commits()  # a previous step's commit, confirmed before anything acts

    async def _await_approval(self, call: Call, ex: Executor, *, observed: bool) -> None:
        """Hold the call to its approval; observers see the wait and the consumption."""
        waiting_from = time.time() if observed else 0.0
        try:
            await self._gate.require(call, ex)
        finally:
            if observed:
                self._emit(
                    "approval.waited",
                    call,
                    started_at=waiting_from,
                    approved=call.consumed_approval is not None,
                )
        if observed:
            self._emit("approval.consumed", call, approval_id=call.consumed_approval)

    def _wants_hard_timeout(self, call: Call, capability: Capability | None = None) -> bool:
        """Whether ``call`` asks for a hard timeout: its own, or one its capability declares.

        Under ``sync_execution = "auto"`` such a call runs its sync handler in the
        handler pool (cut off at the deadline); any other runs it inline, where the
        deadline is checked when the handler returns.
        """
        if call.timeout_s is not None:
            return True
        if capability is None:
            try:
                capability = self._resolve(call.ref)
            except AifrError:
                return False  # the pipeline reports it
        return "timeout_s" in capability.spec.model_fields_set

    def _sync_capability(self, ref: str) -> Capability | None:
        """The capability ``ref`` names if its handler is sync, else ``None``."""
        try:
            capability = self._resolve(ref)
        except AifrError:
            return None  # the pipeline reports it
        return capability if self._blocking.is_sync(capability.handler) else None

    def _resolve(self, ref: str) -> Capability:
        size = len(self.registry)
        if size != self._registry_size:
            self._resolved = {}
            self._registry_size = size
        found = self._resolved.get(ref)
        if found is None:
            found = self.registry.resolve(ref)
            self._resolved[ref] = found
        return found

    async def _execute(
        self, call: Call, ex: Executor, capability: Capability, kwargs: dict[str, Any]
    ) -> Any:
        spec = capability.spec
        handler = capability.handler
        if handler is None:
            raise ExecutionError(f"capability {spec.id} has no handler", capability_id=spec.id)
        if has_secret_refs(kwargs):
            kwargs, call.redactor = self.secrets.resolve_all(kwargs)
        if capability.call_info_param is not None:
            kwargs[capability.call_info_param] = CallInfo(
                request_id=call.context.request_id,
                principal=call.principal,
                idempotency_key=call.idempotency_key,
                trace_id=call.context.trace_id,
                run_id=call.run_id,
                step_id=call.step_id,
                roles=call.roles,
                on_behalf_of=call.on_behalf_of,
            )
        timeout = self._timeout_for(call)
        call.executed = True
        # The handler holds resolved secrets: what it logs is scrubbed of them.
        scrubbing = bind_log_scrubber(call.redactor.text) if call.redactor else None
        try:
            return await ex.run(handler, kwargs, timeout_s=timeout, may_inline=True)
        except DeadlineExceeded:
            raise _timed_out(spec.id, timeout) from None
        except AifrError as exc:
            raise call.redactor.error(exc) from None
        except Exception as exc:  # noqa: BLE001  # foreign handler code: any exception is its failure
            message = call.redactor.text(f"{type(exc).__name__}: {exc}")
            logger.warning("capability %s raised %s", spec.id, message)
            raise ExecutionError(
                f"{spec.id} failed: {message}",
                capability_id=spec.id,
                exception_type=type(exc).__name__,
            ) from (None if call.redactor else exc)
        finally:
            if scrubbing is not None:
                unbind_log_scrubber(scrubbing)

    def _timeout_for(self, call: Call, capability: Capability | None = None) -> float:
        """The call's own timeout, else the spec's declared one, else the runtime default.

        ``capability`` stands in for ``call.capability`` before the pipeline resolves it.
        """
        if call.timeout_s is not None:
            return call.timeout_s
        spec = capability.spec if capability is not None else call.spec
        if spec is not None and "timeout_s" in spec.model_fields_set:
            return spec.timeout_s
        return self.default_timeout_s

    async def _end_at_deadline(self, call: Call, timeout_s: float) -> Result:
        """End ``call`` on the loop: its handler is still running past its deadline."""
        bound = _bind(call)
        try:
            error = call.redactor.error(_timed_out(call.capability_id, timeout_s))
            return await self._finish(call, self._async, Outcome(Status.FAILED, error=error))
        finally:
            _unbind(bound)

    async def _hooks(self, call: Call, ex: Executor, stage: HookStage, **facts: Any) -> None:
        started = _perf()
        hook_call = HookCall(
            stage=stage,
            context=call.context,
            spec=call.spec,
            capability_id=call.capability_id,
            inputs=MappingProxyType(call.inputs),
            **facts,
        )
        for failure in await run_hooks(self.hooks, hook_call, call.hooks, ex):
            scrubbed = replace(failure, message=call.redactor.text(failure.message))
            call.hook_failures += (scrubbed,)
            if self.events.has_observers:
                self._emit("hook.failed", call, **scrubbed.to_dict())
        call.stages[f"hooks.{stage}"] = _perf() - started

    # -- ending a call -------------------------------------------------------------------

    async def _finish(self, call: Call, ex: Executor, outcome: Outcome) -> Result:
        if outcome.replay is not None:
            return await self._finish_replay(call, ex, outcome)
        error = outcome.error
        if call.has_hooks and error is not None and outcome.status is not Status.PENDING_APPROVAL:
            await self._hooks(call, ex, HookStage.ERROR, error=error)
        circuit = self._update_circuit(call, outcome)
        record = outcome.audit
        if record is None:
            record, outcome = await self._audit(call, ex, outcome, circuit)
        context = call.context
        context.enter(Phase.DONE if outcome.status is Status.OK else Phase.FAILED)
        if call.has_hooks:
            interim = build_result(call, outcome, circuit, record)
            await self._hooks(call, ex, HookStage.CLEANUP, error=outcome.error, result=interim)
        result = build_result(call, outcome, circuit, record, timed=True)
        if self.events.has_observers:
            self._emit_finished(call, result)
        return result

    async def _finish_replay(self, call: Call, ex: Executor, outcome: Outcome) -> Result:
        replay = outcome.replay
        assert replay is not None  # noqa: S101  # only called for replays
        record, audited = await self._audit(call, ex, outcome, replay.circuit, "invocation.replay")
        if record is None:  # the replay could not be audited: report that, not the replay
            return build_result(call, audited, replay.circuit, None, timed=True)
        return replace(
            replay,
            audit_id=record.id if record is not None else None,
            audit_seq=record.seq if record is not None else None,
            replayed=True,
        )

    def _update_circuit(self, call: Call, outcome: Outcome) -> str:
        capability_id = call.capability_id
        if call.capability is None:
            return CircuitState.CLOSED
        if outcome.status is Status.OK:
            if call.circuit is not CircuitState.CLOSED or self.circuits.failures(capability_id):
                self.circuits.record_success(capability_id)
                if self.events.has_observers and call.circuit is not CircuitState.CLOSED:
                    self._emit("circuit.closed", call)
            return CircuitState.CLOSED
        error = outcome.error
        if call.executed and error is not None and error.code in _HEALTH_CODES:
            state = self.circuits.record_failure(capability_id)
            if state is CircuitState.OPEN and self.events.has_observers:
                self._emit("circuit.opened", call, failures=self.circuits.failures(capability_id))
            return state
        if call.is_trial:
            self.circuits.release_trial(capability_id)
        return self.circuits.state(capability_id)

    async def _audit(
        self, call: Call, ex: Executor, outcome: Outcome, circuit: str, kind: str = "invocation"
    ) -> tuple[AuditRecord | None, Outcome]:
        started = _perf()
        foreseen = ended_as_foreseen(call, outcome, circuit, kind)  # asked once, for both
        event = finished_event(call, outcome, circuit, kind, foreseen=foreseen)
        guard = self._idempotency
        try:
            if call.consumed_approval is not None and self.approvals is not None:
                stored = stored_result(call, outcome, circuit)
                record = await ex.blocking(
                    self.approvals.finish, call.consumed_approval, stored, event
                )
            elif call.claimed_key and guard is not None and outcome.status is Status.OK:
                stored = finished_stored_result(call, outcome, circuit, foreseen=foreseen)
                record = await ex.blocking(guard.complete, call, stored, event)
            else:
                record = await ex.blocking(self.ledger.append, event)
        except UnconfirmedCommitError:
            raise  # an earlier step may not be recorded: not this call's outcome to report
        except AifrError as exc:
            logger.error(
                "audit append failed for request %s: %s", call.context.request_id, exc.code.value
            )
            record, outcome = None, Outcome(Status.FAILED, error=exc)
        kept = record is not None and outcome.status is Status.OK and call.consumed_approval is None
        if call.claimed_key and guard is not None and not kept:
            await ex.blocking(guard.release, call)
        call.context.enter(Phase.AUDITED)
        call.stages["audit"] = _perf() - started
        return record, outcome

    def _emit_decision(self, call: Call, started_at: float) -> None:
        decision, capability = call.decision, call.capability
        assert decision is not None and capability is not None  # noqa: S101  # just decided
        self._emit(
            "policy.decided",
            call,
            started_at=started_at,
            decision=decision.decision.value,
            rule_id=decision.rule_id,
            risk=capability.spec.effective_risk.value,
        )

    def _emit_finished(self, call: Call, result: Result) -> None:
        spec = call.capability.spec if call.capability is not None else None
        self._emit(
            "invocation.finished",
            call,
            status=result.status,
            audit_id=result.audit_id,
            capability_version=result.capability_version,
            decision=result.decision.decision.value if result.decision is not None else None,
            rule_id=result.decision.rule_id if result.decision is not None else None,
            risk=spec.effective_risk.value if spec is not None else None,
            error_code=result.error.code.value if result.error is not None else None,
            audit_s=call.stages.get("audit"),
        )

    def _emit(self, kind: EventKind, call: Call, **details: Any) -> None:
        self.events.emit(
            LifecycleEvent(
                kind=kind,
                request_id=call.context.request_id,
                capability_id=call.capability_id,
                details=call.redactor.scrub(details),
            )
        )


def _never() -> bool:
    return False


def _nothing_to_settle() -> None:
    """The runtime's commit settling when its idempotency store never defers a commit."""


def _check_principal(call: Call) -> None:
    """Refuse a call whose principal is no name, before anything runs.

    Raises:
        InputValidationError: the principal is no name; the call is marked, so its
            audit record is not keyed on it.
    """
    try:
        check_principal(call.principal)
    except AifrError:
        call.principal_refused = True
        raise


def _check_idempotency_key(call: Call) -> None:
    """Refuse an empty idempotency key rather than take it for no key.

    A caller that passes one means to be idempotent (a retry with an unset variable);
    running the action again would be the one outcome the key exists to prevent.

    Raises:
        InputValidationError: the key is ``""``.
    """
    if call.idempotency_key != "":
        return
    raise InputValidationError(
        "the idempotency key is empty; pass a non-empty key, or none",
        errors=[
            FieldError(
                path="idempotency_key",
                code="min_length",
                message="the idempotency key is empty",
                expected="a non-empty string, or no key",
                received="",
            )
        ],
    )
