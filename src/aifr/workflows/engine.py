r"""The workflow engine: runs steps through the governed runtime, durably, as a saga.

Each step goes registry -> risk -> policy -> (approval) -> execute -> commit, all inside
``Runtime.invoke``; the engine adds the run's state machine around it::

    pending -> running -> completed
                  |  \-> waiting_approval -> running (approved)
                  |                       \-> compensating (rejected, expired)
                  |-> compensating -> compensated | compensation_failed
                  |-> needs_review (a capability changed since the run started)
                  \-> failed (a step with on_failure: halt)

Every state change is committed, with the audit record that tells it, before the next
step starts. A step's success costs one commit: the runtime hands the result and its
audit record to the step store (``aifr.storage.sqlite.runs.StepResultStore``), which
marks the step completed in the same transaction. The idempotency key of a step is
derived from run id, step id and attempt, so a step interrupted by a crash is re-run
with the same key and a capability that honours keys does its effect once.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from pydantic import JsonValue

from aifr.errors import AifrError, ErrorCode, WorkflowError
from aifr.invocation import Result, Runtime, Status, check_principal, new_id
from aifr.workflows.approvals import approval_notice, settle_approval, withdraw_waiting
from aifr.workflows.leases import Heartbeat, new_owner_id
from aifr.workflows.planning import plan_workflow, unregistered_capabilities
from aifr.workflows.ports import (
    TERMINAL_STATES,
    Completion,
    DefersCommits,
    RunFinish,
    RunRecord,
    RunState,
    RunStore,
    StepKey,
    StepRecord,
    StepState,
)
from aifr.workflows.recovery import (
    CurrentFingerprints,
    DriftRule,
    Recovery,
    accept_drift,
    apply_drift_rule,
    check_reviewer,
)
from aifr.workflows.saga import Saga
from aifr.workflows.spans import drive_span, run_trace_id, step_span
from aifr.workflows.spec import StepSpec, WorkflowSpec
from aifr.workflows.state import (
    RunContext,
    error_dict,
    queued_steps,
    released_lease,
    workflow_event,
)
from aifr.workflows.templating import render_inputs
from aifr.workflows.views import PlannedStep, RunView

__all__ = ["WorkflowEngine"]

logger = logging.getLogger(__name__)


class WorkflowEngine:
    """Starts, drives, resumes, cancels and recovers workflow runs. Thread-safe per run.

    Nothing happens at construction; :meth:`recover` (called by ``aifr worker`` and by
    any command that starts the engine) resumes unfinished runs.
    """

    def __init__(
        self,
        runtime: Runtime,
        store: RunStore,
        *,
        on_fingerprint_drift: DriftRule = "needs_review",
        webhook_url: str | None = None,
        lease_ttl_s: float = 30.0,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        overlap_commits: bool | Callable[[], bool] = True,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.on_fingerprint_drift: DriftRule = on_fingerprint_drift
        self.webhook_url = webhook_url
        self.lease_ttl_s = lease_ttl_s
        self.owner = owner or new_owner_id()
        self.clock = clock
        self._stopping = threading.Event()
        self._heartbeat = Heartbeat(store, self.owner, lease_ttl_s, clock=clock)
        self._saga = Saga(runtime, clock)
        self._fingerprints = CurrentFingerprints()
        self.recovery = Recovery(self)
        self._deferring = store if isinstance(store, DefersCommits) else None
        if callable(overlap_commits):
            self._overlap: Callable[[], bool] = overlap_commits
        else:
            fixed = overlap_commits

            def always() -> bool:
                return fixed

            self._overlap = always

    @property
    def overlap_commits(self) -> bool:
        """Whether a step's commit is confirmed before the next step acts, not before its checks.

        ``workflows.overlap_commits``, on a store that :class:`DefersCommits`. Asked again
        for each claim and drive: under ``"auto"`` (a
        :class:`~aifr.workflows.overlap.CommitOverlap`) the answer follows the host's workers.
        """
        return self._deferring is not None and self._overlap()

    def deferred_commits(self) -> AbstractContextManager[None]:
        """The store's deferred commits when :attr:`overlap_commits`, else a no-op block.

        What a run is driven in, and a worker's claim with it (see ``Recovery``).
        """
        if self._deferring is not None and self._overlap():
            return self._deferring.deferred_commits()
        return nullcontext()

    def claiming_ahead(
        self, states: frozenset[RunState], wanted: Callable[[], bool]
    ) -> AbstractContextManager[None]:
        """The store's claims ahead when :attr:`overlap_commits`, else a no-op block.

        A worker's turn (see ``Recovery``): a run's end, written with its last step,
        claims the worker's next run in ``states`` in the same commit, when ``wanted()``
        says the turn drives another run.
        """
        if self._deferring is not None and self._overlap():
            return self._deferring.claiming_ahead(
                states, self.owner, self.lease_ttl_s, self.clock, wanted
            )
        return nullcontext()

    # -- starting ------------------------------------------------------------------------

    def start(
        self,
        spec: WorkflowSpec,
        inputs: Mapping[str, Any],
        principal: str,
        *,
        roles: tuple[str, ...] = (),
        run_id: str | None = None,
        execute: bool = True,
    ) -> RunView:
        """Create a run and, with ``execute``, drive it until it finishes or pauses.

        Raises:
            InputValidationError: the inputs do not match the workflow's declaration,
                or ``principal`` is not a valid principal name.
            WorkflowError: a step (or its compensation) names a capability that is not
                registered (``workflow.invalid``); no run is created.
            StorageError: the run cannot be stored.
        """
        check_principal(principal)
        unregistered = unregistered_capabilities(self.runtime.registry, spec)
        if unregistered:
            raise WorkflowError(
                f"workflow {spec.name} cannot run: " + "; ".join(unregistered),
                code=ErrorCode.WORKFLOW_INVALID,
                workflow=spec.name,
                problems=list[JsonValue](unregistered),
            )
        bound = spec.bind_inputs(inputs)
        now = self.clock()
        run_id = run_id or f"run-{new_id()[:20]}"
        fingerprints: dict[str, str] = {}
        for step in spec.steps:
            fingerprint = self._fingerprints.get(self.runtime.registry, step.capability)
            if fingerprint is not None:
                fingerprints[step.id] = fingerprint
        steps = queued_steps(run_id, spec, fingerprints)
        run = RunRecord(
            id=run_id,
            workflow=spec.name,
            workflow_version=spec.version,
            definition=spec.definition,
            inputs=bound,
            principal=principal,
            roles=tuple(sorted(roles)),
            state=RunState.RUNNING if execute else RunState.PENDING,
            created_at=now,
            updated_at=now,
            fingerprints=fingerprints,
            lease_owner=self.owner if execute else None,
            lease_expires_at=now + self.lease_ttl_s if execute else None,
        )
        # Starting at once is one commit: the run is created already running. A queued
        # run carries the event of its start, for a store whose claim can append it.
        if execute:
            self.store.create(run, steps, workflow_event("started", run))
        else:
            started = workflow_event("started", run.evolve(state=RunState.RUNNING))
            self.store.create(run, steps, workflow_event("created", run), start=started)
        context = RunContext(
            run=run,
            spec=spec,
            steps={s.step_id: s for s in steps},
            store=self.store,
            owner=self.owner,
            clock=self.clock,
            cancel_checked_at=time.monotonic(),  # created just now: nobody cancelled it yet
        )
        if not execute:  # queued as written: a worker may take it at once, nothing to re-read
            return RunView(run, steps)
        self._drive(context)
        if context.run.state in TERMINAL_STATES:  # it ended while we held it: no re-read
            return RunView(context.run, context.ordered())
        return self.view(run.id)

    def plan(
        self,
        spec: WorkflowSpec,
        inputs: Mapping[str, Any],
        principal: str,
        *,
        roles: tuple[str, ...] = (),
    ) -> list[PlannedStep]:
        """Each step's capability, risk and policy decision for ``principal``; runs nothing.

        Inputs that depend on earlier steps' outputs cannot be known yet; the decision
        is then taken on the inputs that can be rendered.

        Raises:
            InputValidationError: the inputs do not match the workflow's declaration.
        """
        return plan_workflow(self.runtime, spec, inputs, principal, roles=roles)

    # -- operator actions ----------------------------------------------------------------

    def resume(self, run_id: str, *, operator: str | None = None) -> RunView:
        """Drive a run on: an approval decided, drift reviewed, or a crash recovered.

        A ``needs_review`` run resumes with its capabilities' current fingerprints
        accepted by ``operator`` (recorded in the audit ledger), who must be named and
        must not be the run's own principal.

        Raises:
            InputValidationError: a ``needs_review`` run and no ``operator``.
            ApprovalError: ``approval.self_approval``: the operator is the run's principal.
            WorkflowError: ``workflow.run_not_found``; ``workflow.bad_state`` for a
                finished or ``compensation_failed`` run (see :meth:`retry_compensation`)
                or one another worker holds.
        """
        run = self._existing(run_id)
        if run.state not in _RESUMABLE:
            raise _bad_state(run, "resume")
        reviewer = check_reviewer(run, operator) if run.state is RunState.NEEDS_REVIEW else None
        context = self._lease(run_id)
        if context is None:
            return self.view(run_id)
        if context.run.state is RunState.NEEDS_REVIEW:
            accept_drift(
                context, self.runtime.registry, reviewer or check_reviewer(context.run, operator)
            )
        self._drive(context)
        return self.view(run_id)

    def cancel(self, run_id: str, *, operator: str) -> RunView:
        """Stop a run and compensate its completed steps; it ends ``cancelled``.

        A run another worker is driving is flagged and stops at its next step.

        Raises:
            WorkflowError: ``workflow.run_not_found`` or ``workflow.bad_state`` (finished).
        """
        run = self._existing(run_id)
        if run.state in TERMINAL_STATES:
            raise _bad_state(run, "cancel")
        context = self._lease(run_id, quiet=True)
        if context is None:
            self.store.request_cancel(run_id)
            return self.view(run_id)
        context.cancelled = True
        context.commit(
            "cancel_requested",
            state=RunState.COMPENSATING,
            actor=operator,
            cancel_requested=True,
        )
        withdraw_waiting(context, self.runtime.approvals, operator)
        self._drive(context)
        return self.view(run_id)

    def retry_compensation(self, run_id: str, *, operator: str) -> RunView:
        """Try the compensation of a ``compensation_failed`` run again, from where it failed.

        Raises:
            WorkflowError: ``workflow.run_not_found``; ``workflow.bad_state`` unless the
                run is ``compensation_failed``.
        """
        run = self._existing(run_id)
        if run.state is not RunState.COMPENSATION_FAILED:
            raise _bad_state(run, "retry the compensation of")
        context = self._lease(run_id)
        if context is None:
            return self.view(run_id)
        context.cancelled = context.run.cancel_requested
        context.commit("compensation_retried", state=RunState.COMPENSATING, actor=operator)
        self._drive(context)
        return self.view(run_id)

    def recover(self, *, views: bool = True, queued: bool = True) -> list[RunView]:
        """Resume every unfinished run this worker can take (see :class:`Recovery`).

        ``views=False``: return nothing, and read no driven run back. ``queued=False``:
        resume only runs that were started and interrupted, and leave the runs queued
        for workers (``pending``, never started) in the queue.
        """
        return self.recovery.run_once(views=views, queued=queued)

    @property
    def more_queued(self) -> bool:
        """Whether the last :meth:`recover` drove its whole limit: the queue may hold more."""
        return self.recovery.more_queued

    def stop(self) -> None:
        """Let a worker shut down: no new run, no retry wait, no step after the current one."""
        self._stopping.set()

    def is_stopping(self) -> bool:
        """Whether :meth:`stop` was called (a worker takes no new run then)."""
        return self._stopping.is_set()

    # -- reading -------------------------------------------------------------------------

    def view(self, run_id: str) -> RunView:
        """The run and its steps as stored.

        Raises:
            WorkflowError: ``workflow.run_not_found``.
        """
        return RunView(self._existing(run_id), self.store.steps(run_id))

    def list(self, *, state: RunState | None = None, limit: int = 100) -> builtins.list[RunRecord]:
        """Runs, newest first."""
        return self.store.list(state=state, limit=limit)

    def held(self) -> builtins.list[str]:
        """Runs this engine is driving right now."""
        return self._heartbeat.held()

    # -- driving -------------------------------------------------------------------------

    def _existing(self, run_id: str) -> RunRecord:
        run = self.store.get(run_id)
        if run is None:
            raise WorkflowError(
                f"no workflow run {run_id!r}",
                code=ErrorCode.WORKFLOW_RUN_NOT_FOUND,
                run_id=run_id,
            )
        return run

    def _lease(self, run_id: str, *, quiet: bool = False) -> RunContext | None:
        run = self._existing(run_id)
        if run.state in TERMINAL_STATES:
            if quiet:
                return None
            raise _bad_state(run, "resume")
        taken = self.recovery.take(run)
        if taken is None:
            if quiet:
                return None
            raise WorkflowError(
                f"run {run_id} is being driven by {run.lease_owner}; try again later",
                code=ErrorCode.WORKFLOW_BAD_STATE,
                run_id=run_id,
            )
        return RunContext.load(taken, self.store, self.owner, self.clock)

    def drive(self, context: RunContext) -> None:
        """Drive a leased run until it finishes or pauses (used by recovery)."""
        self._drive(context)

    def _drive(self, context: RunContext) -> None:
        """Advance the run until it ends, pauses, or this engine is asked to stop.

        A stop takes effect between steps: the step in flight finishes and commits, then
        the lease is given back, so another worker resumes the run at once instead of
        after the lease expires (``aifr worker`` on SIGTERM would otherwise finish every
        remaining step of a long run before it could exit).

        The run is driven inside the store's deferred commits (:class:`DefersCommits`,
        PostgreSQL): a step's write returns with its rows while the server flushes its
        commit, and the runtime settles it before the next step's effect. The checks
        in between overlap the flush. The run's last commit is settled when the block
        ends, or, inside a worker's turn (itself such a block), while the turn claims
        its next run, before that run's first effect.
        """
        run_id = context.run.id
        with (
            self._heartbeat.holding(run_id),
            drive_span(self.runtime, context),
            self.deferred_commits(),
        ):
            try:
                while self._advance(context) and not self._stopping.is_set():
                    pass
            except WorkflowError as exc:
                if exc.code is not ErrorCode.WORKFLOW_LEASE_LOST:
                    raise
                logger.warning("run %s: %s", run_id, exc.message)
                return
            finally:
                if context.run.lease_owner == self.owner:
                    self.store.release(run_id, self.owner)

    def _advance(self, context: RunContext) -> bool:
        state = context.run.state
        if state is RunState.PENDING:
            context.commit("started", state=RunState.RUNNING)
            return True
        if state in (RunState.RUNNING, RunState.WAITING_APPROVAL):
            if self._cancel_requested(context):
                context.cancelled = True
                context.commit(
                    "cancel_requested", state=RunState.COMPENSATING, cancel_requested=True
                )
                return True
            step = next(
                (s for s in context.steps.values() if s.state is not StepState.COMPLETED), None
            )
            if step is None:
                context.commit("completed", state=RunState.COMPLETED, **released_lease())
                return False
            return self._step(context, step)
        if state is RunState.COMPENSATING:
            context.cancelled = context.cancelled or context.run.cancel_requested
            self._saga.compensate(context)
        return False

    def _cancel_requested(self, context: RunContext) -> bool:
        """Whether someone asked (from anywhere) to cancel; read at most every 0.2 s."""
        now = time.monotonic()
        if now - context.cancel_checked_at < _CANCEL_POLL_S:
            return False
        context.cancel_checked_at = now
        return self.store.is_cancel_requested(context.run.id)

    def _step(self, context: RunContext, record: StepRecord) -> bool:
        spec = context.step_spec(record.step_id)
        registry = self.runtime.registry
        current = self._fingerprints.get(registry, record.capability)
        if current != context.run.fingerprints.get(record.step_id) and apply_drift_rule(
            context, registry, self.on_fingerprint_drift, record, self._fail
        ):  # the same fingerprint as at the start cannot be drift: no second lookup
            return context.run.state is RunState.COMPENSATING
        approval_id = None
        if record.state is StepState.WAITING_APPROVAL:
            decided = settle_approval(
                context, record, self.runtime.approvals, self._fail, self._settled
            )
            if decided is None:  # still waiting, or the approval already settled the step
                return context.run.state in (RunState.RUNNING, RunState.COMPENSATING)
            approval_id = decided
        if record.next_attempt_at is not None:
            wait = record.next_attempt_at - self.clock()
            if wait > 0 and self._stopping.wait(wait):
                return False
        try:
            inputs = (
                render_inputs(
                    spec.inputs, context.template_context(), where=f"steps.{spec.id}.inputs"
                )
                if spec.is_templated
                else dict(spec.inputs)
            )
        except WorkflowError as exc:
            return self._fail(context, record, exc)
        key = str(StepKey(context.run.id, record.step_id, record.attempt))
        if context.span_id is None or not self.runtime.events.has_observers:
            # Nobody traces this drive: no span to announce, so no context manager to run
            # (``step_span`` would yield ``None`` on the same test).
            return self._attempt(context, record, spec, inputs, key, approval_id, None)
        with step_span(self.runtime, context, record) as span_id:
            return self._attempt(context, record, spec, inputs, key, approval_id, span_id)

    def _attempt(
        self,
        context: RunContext,
        record: StepRecord,
        spec: StepSpec,
        inputs: dict[str, JsonValue],
        key: str,
        approval_id: str | None,
        span_id: str | None,
    ) -> bool:
        """Invoke one attempt of a step and commit its outcome; true to go on."""
        result, completion = context.invoke(
            self.runtime,
            spec.capability,
            inputs,
            step_id=record.step_id,
            key=key,
            approval_id=approval_id,
            timeout_s=spec.timeout_s,
            finish=self._finish_with(context, record),
            trace_id=context.trace_id or _trace_of(context),
            parent_span_id=span_id,
        )
        return self._outcome(context, record, spec, inputs, result, completion)

    def _finish_with(self, context: RunContext, record: StepRecord) -> RunFinish | None:
        """The run's end, for its last step's commit to carry (``None`` for other steps)."""
        if record.step_id != next(reversed(context.steps)):
            return None
        ended = context.run.evolve(state=RunState.COMPLETED, **released_lease())
        return RunFinish(ended, workflow_event("completed", ended), self.owner)

    def _outcome(
        self,
        context: RunContext,
        record: StepRecord,
        spec: StepSpec,
        inputs: dict[str, JsonValue],
        result: Result,
        completion: Completion | None,
    ) -> bool:
        """Commit what a step's invocation came to (``completion``: its own commit); true to go on."""
        status = result.status
        if status is Status.OK:
            done = completed_step(
                record,
                output=result.output,
                inputs=inputs,
                fingerprint=result.fingerprint or record.fingerprint,
                audit_id=str(result.audit_id) if result.audit_id is not None else None,
                finished_at=self.clock(),
            )
            if completion is not None:
                context.remember(done)
                if completion.finished_run is not None:
                    context.adopt(completion.finished_run, "completed")
            elif self._is_stored(context, record.step_id, StepState.COMPLETED, result):
                context.remember(done)
            else:
                context.commit("step_completed", steps=[done])
            return True
        if status is Status.PENDING_APPROVAL:
            waiting = record.evolve(
                state=StepState.WAITING_APPROVAL, approval_id=result.approval_id, inputs=inputs
            )
            context.commit(
                "waiting_approval",
                state=RunState.WAITING_APPROVAL,
                steps=[waiting],
                notification=approval_notice(context, waiting, result, self.webhook_url),
                details={"approval_id": result.approval_id},
                **released_lease(),
            )
            return False
        error = result.error or WorkflowError(f"step {record.step_id} failed")
        if error.code is ErrorCode.STORAGE_FAILED:
            # The outcome could not be recorded (the database went away mid-commit): the
            # attempt is neither done nor failed. Stop driving; whoever resumes the run
            # re-runs this attempt with the same idempotency key.
            raise error
        retry = spec.retry
        if (
            status is Status.FAILED
            and error.code.value in retry.retry_on
            and record.attempt <= retry.count
        ):
            delay = retry.delay(record.attempt)
            again = record.evolve(
                attempt=record.attempt + 1,
                error=error_dict(error),
                inputs=inputs,
                next_attempt_at=self.clock() + delay,
            )
            context.commit(
                "step_retry",
                steps=[again],
                outcome=error.code.value,
                details={"attempt": record.attempt, "retry_in_s": delay},
            )
            return True
        return self._fail(context, record.evolve(inputs=inputs), error)

    def _settled(self, context: RunContext, record: StepRecord, result: Result) -> None:
        """A step whose approved execution already finished (found on its approval)."""
        spec = context.step_spec(record.step_id)
        key = str(StepKey(context.run.id, record.step_id, record.attempt))
        completion = self.store.consume_completion(key)
        self._outcome(context, record, spec, record.inputs or {}, result, completion)

    def _is_stored(
        self, context: RunContext, step_id: str, state: StepState, result: Result
    ) -> bool:
        """For a replayed result: whether the store already holds the step in ``state``."""
        if not result.replayed:
            return False
        stored = self.store.step(context.run.id, step_id)
        return stored is not None and stored.state is state

    def _fail(self, context: RunContext, record: StepRecord, error: AifrError) -> bool:
        failed = record.evolve(
            state=StepState.FAILED, error=error_dict(error), finished_at=self.clock()
        )
        rule = context.spec.failure_rule(context.step_spec(record.step_id))
        halt = rule == "halt"
        context.commit(
            "failed" if halt else "step_failed",
            state=RunState.FAILED if halt else RunState.COMPENSATING,
            steps=[failed],
            outcome=error.code.value,
            error=error_dict(error),
            failed_step=record.step_id,
            details={"on_failure": rule},
            **(released_lease() if halt else {}),
        )
        return not halt


_CANCEL_POLL_S = 0.2
_RESUMABLE = frozenset(
    {
        RunState.PENDING,
        RunState.RUNNING,
        RunState.WAITING_APPROVAL,
        RunState.COMPENSATING,
        RunState.NEEDS_REVIEW,
    }
)


def completed_step(
    record: StepRecord,
    *,
    output: JsonValue,
    inputs: dict[str, JsonValue],
    fingerprint: str | None,
    audit_id: str | None,
    finished_at: float,
) -> StepRecord:
    """``record`` completed, with its output, inputs, fingerprint, audit id and end time.

    ``record.evolve(state=COMPLETED, error=None, next_attempt_at=None, ...)`` built field
    by field, at half the cost of ``dataclasses.replace`` (once per step; a unit test
    pins the two equal over every field of ``StepRecord``).
    """
    return StepRecord(
        run_id=record.run_id,
        step_id=record.step_id,
        index=record.index,
        capability=record.capability,
        state=StepState.COMPLETED,
        attempt=record.attempt,
        fingerprint=fingerprint,
        inputs=inputs,
        output=output,
        error=None,
        approval_id=record.approval_id,
        audit_id=audit_id,
        next_attempt_at=None,
        finished_at=finished_at,
        undo_attempt=record.undo_attempt,
        undo_capability=record.undo_capability,
        undo_output=record.undo_output,
        undo_error=record.undo_error,
        undo_approval_id=record.undo_approval_id,
    )


def _trace_of(context: RunContext) -> str:
    """The run's trace id (see ``run_trace_id``), kept on the context after the first step."""
    context.trace_id = run_trace_id(context.run.id)
    return context.trace_id


def _bad_state(run: RunRecord, action: str) -> WorkflowError:
    return WorkflowError(
        f"cannot {action} run {run.id}: it is {run.state.value}",
        code=ErrorCode.WORKFLOW_BAD_STATE,
        run_id=run.id,
        state=run.state.value,
    )
