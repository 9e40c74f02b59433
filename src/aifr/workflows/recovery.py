"""Crash recovery and fingerprint drift: picking unfinished runs back up, safely.

``Recovery.run_once`` finds every run a worker should drive (pending, running or
compensating, plus waiting runs whose approval was decided or expired), takes its
lease (free, expired, or held by a process on this host that died) and drives it on
from its last committed step. Nothing about a run lives only in memory, so this is the
same code path whether the previous worker finished cleanly or was killed mid-commit.

Fingerprint drift (seed 002's "Timescape"): a run records each step's capability
fingerprint when it starts. Before a step runs, the current fingerprint is compared
with the recorded one; a difference is handled by the engine's documented rule
(``needs_review`` by default, or ``continue`` / ``fail``) and always audited.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

from pydantic import JsonValue

from aifr.capabilities import CapabilityRegistry
from aifr.errors import (
    AifrError,
    ApprovalError,
    ErrorCode,
    FieldError,
    InputValidationError,
    UnconfirmedCommitError,
    WorkflowError,
)
from aifr.invocation import ApprovalStatus
from aifr.workflows.leases import is_owner_gone
from aifr.workflows.ports import ACTIVE_STATES, RunRecord, RunState, StepRecord, StepState
from aifr.workflows.state import RunContext, error_dict, released_lease

if TYPE_CHECKING:
    from aifr.workflows.engine import WorkflowEngine
    from aifr.workflows.views import RunView

__all__ = [
    "CurrentFingerprints",
    "Drift",
    "DriftRule",
    "Recovery",
    "accept_drift",
    "apply_drift_rule",
    "check_reviewer",
    "drifted_steps",
]

logger = logging.getLogger(__name__)

DriftRule = Literal["needs_review", "continue", "fail"]
_RESUMABLE = ACTIVE_STATES | {RunState.WAITING_APPROVAL}


@dataclass(frozen=True, slots=True)
class Drift:
    """A step whose capability's fingerprint differs from the one the run started with."""

    step_id: str
    recorded: str
    current: str


class CurrentFingerprints:
    """Capability fingerprints as the registry resolves them now, looked up once per state.

    The engine compares a step's fingerprint before every step. Registrations are never
    removed, so the registry's size changes with each one and tells when an answer may
    have changed (the runtime's own resolution cache relies on the same).
    """

    def __init__(self) -> None:
        self._state: tuple[CapabilityRegistry | None, int, dict[str, str | None]] = (
            None,
            -1,
            {},
        )

    def get(self, registry: CapabilityRegistry, ref: str) -> str | None:
        """The fingerprint ``ref`` resolves to in ``registry``; ``None`` when unknown."""
        known, size, found = self._state
        current = len(registry)
        if known is not registry or size != current:
            found = {}
            self._state = (registry, current, found)
        if ref not in found:
            spec = registry.get(ref)
            found[ref] = spec.fingerprint if spec is not None else None
        return found[ref]


def drifted_steps(
    context: RunContext, registry: CapabilityRegistry, records: Sequence[StepRecord]
) -> list[Drift]:
    """The steps among ``records`` whose capability changed since the run started."""
    drift = []
    for record in records:
        recorded = context.run.fingerprints.get(record.step_id)
        found = registry.get(record.capability)
        if recorded and found is not None and found.fingerprint != recorded:
            drift.append(Drift(record.step_id, recorded, found.fingerprint))
    return drift


def apply_drift_rule(
    context: RunContext,
    registry: CapabilityRegistry,
    rule: DriftRule,
    record: StepRecord,
    fail: Callable[[RunContext, StepRecord, AifrError], bool],
) -> bool:
    """Apply ``rule`` if ``record``'s capability drifted; true when the step must not run.

    Every drift is audited (``workflow.fingerprint_drift``). ``continue`` records the
    new fingerprint and goes on; ``fail`` fails the step through ``fail`` (the run is
    compensated); ``needs_review`` pauses the run for an operator.
    """
    drift = drifted_steps(context, registry, [record])
    if not drift:
        return False
    facts: dict[str, JsonValue] = {
        "rule": rule,
        "drift": [
            {"step_id": d.step_id, "recorded": d.recorded, "current": d.current} for d in drift
        ],
    }
    if rule == "continue":
        context.commit(
            "fingerprint_drift",
            outcome=ErrorCode.WORKFLOW_FINGERPRINT_DRIFT.value,
            fingerprints={**context.run.fingerprints, **{d.step_id: d.current for d in drift}},
            details=facts,
        )
        return False
    error = WorkflowError(
        f"step {record.step_id}: capability {record.capability} changed since the run "
        f"started (fingerprint {drift[0].recorded[:12]} -> {drift[0].current[:12]})",
        code=ErrorCode.WORKFLOW_FINGERPRINT_DRIFT,
        step_id=record.step_id,
    )
    if rule == "fail":
        context.commit("fingerprint_drift", outcome=error.code.value, details=facts)
        fail(context, record, error)
        return True
    context.commit(
        "fingerprint_drift",
        state=RunState.NEEDS_REVIEW,
        outcome=error.code.value,
        error=error_dict(error),
        failed_step=record.step_id,
        details=facts,
        **released_lease(),
    )
    return True


def check_reviewer(run: RunRecord, operator: str | None) -> str:
    """The operator who may accept the drift of ``run``: named, and not its own principal.

    The review is the human check on a capability that changed under a run; accepted by
    nobody in particular, or by the principal (an agent) whose run it is, it checks
    nothing. The same rule keeps a requester from approving their own request.

    Raises:
        InputValidationError: no operator was named.
        ApprovalError: ``approval.self_approval``: the operator is the run's principal.
    """
    if operator is None:
        raise InputValidationError(
            f"run {run.id} needs review: name the operator accepting the changed "
            f"capabilities (aifr runs resume {run.id} --as OPERATOR)",
            errors=[
                FieldError(path="operator", code="required", message="an operator is required")
            ],
        )
    if operator == run.principal:
        raise ApprovalError(
            f"{operator} cannot accept the review of run {run.id}: nobody reviews their own run",
            code=ErrorCode.APPROVAL_SELF_APPROVAL,
            run_id=run.id,
            approver=operator,
        )
    return operator


def accept_drift(context: RunContext, registry: CapabilityRegistry, operator: str) -> None:
    """An operator accepts the current fingerprints of a ``needs_review`` run (audited)."""
    current = {
        s.step_id: found.fingerprint
        for s in context.ordered()
        if (found := registry.get(s.capability)) is not None
    }
    context.commit(
        "review_accepted",
        state=RunState.RUNNING,
        actor=operator,
        fingerprints=current,
        error=None,
        failed_step=None,
    )


def _queued_for_claim(run: RunRecord, claimable: frozenset[RunState], now: float) -> bool:
    """Whether the work queue's claim would take ``run`` as read: a state it claims, no live lease.

    The scan after the claims leaves such a run to the next claim: the claim leases,
    starts and reads a run in one statement and one commit, where the scan's
    :meth:`Recovery.take` spends a lease write, a start and two reads, two commits
    among them. A scan runs after the claims stopped, so such a run is there only
    because this turn reached its limit or the run came in meanwhile, and the next
    turn's claims take it.
    """
    if run.state not in claimable:
        return False
    return run.lease_owner is None or (
        run.lease_expires_at is not None and run.lease_expires_at < now
    )


class _Driven(NamedTuple):
    """A run a worker's turn claimed: its id, and whether its drive failed (its lease kept)."""

    run_id: str
    failed: bool


class Recovery:
    """Finds unfinished runs and hands them, leased, to the engine."""

    def __init__(self, engine: WorkflowEngine) -> None:
        self._engine = engine
        self.more_queued = False
        """Whether the last :meth:`run_once` claimed and drove its whole limit of runs.

        The queue may then hold more, which the next turn's claims take; a worker turns
        again at once instead of waiting for a wake-up or its poll interval (a backlog
        with no new notifications waited a poll interval for every ``limit`` runs).
        """

    def take(self, run: RunRecord) -> RunRecord | None:
        """Lease ``run`` for this engine: free, expired, ours, or its owner died."""
        engine = self._engine
        store = engine.store
        now = engine.clock()
        taken = store.acquire(run.id, engine.owner, engine.lease_ttl_s, now)
        if taken is not None:
            return taken
        owner = run.lease_owner
        if owner and is_owner_gone(owner):
            logger.info("run %s: lease owner %s is gone; taking over", run.id, owner)
            if store.take_over(run.id, owner, engine.owner, engine.lease_ttl_s, now):
                return store.get(run.id)
        return None

    def may_take(self, run: RunRecord, now: float) -> bool:
        """Whether :meth:`take` could lease ``run`` as read: free, expired, ours, or dead.

        A scan skips a run another live worker (or another engine of this process)
        holds without asking the database: the attempt would match nothing, but it is a
        write that waits for the holder's row lock. Run ids leased by a live owner are
        the bulk of a busy queue, so the scan would otherwise cost one such write per
        held run on every idle turn of every engine.
        """
        owner = run.lease_owner
        if owner is None or owner == self._engine.owner:
            return True
        if run.lease_expires_at is not None and run.lease_expires_at < now:
            return True
        return is_owner_gone(owner)

    def _claimed(self, limit: int, views: bool, states: frozenset[RunState]) -> list[RunView]:
        """Claim and drive runs in ``states`` until none is free (or ``limit`` were driven).

        The turn is one block of deferred commits (see ``deferred_commits``): a claim's
        commit, like a step's, is confirmed before the run's first effect, not before its
        load and first checks. A run that ends with its last step's write claims the next
        run in that write's own commit (``claiming_ahead``); a run that ends otherwise has
        its last commit confirmed while the next run's claim goes out beside it (on
        another connection), not before. Nothing of the next run depends on the last
        one's end, and the next run's first effect waits for its commit either way.
        """
        engine = self._engine
        driven: list[RunView] = []
        done = 0
        failed: list[str] = []  # kept leased until the loop ends, so not claimed again
        reported: UnconfirmedCommitError | None = None

        def another() -> bool:
            """Whether the turn drives another run after the one ending now."""
            return done + len(failed) + 1 < limit and not engine.is_stopping()

        try:
            with engine.claiming_ahead(states, another), engine.deferred_commits():
                while done + len(failed) < limit and not engine.is_stopping():
                    ended, reported = self._claim_and_drive(states, driven if views else None)
                    if ended is None:
                        break
                    if ended.failed:
                        failed.append(ended.run_id)
                        if reported is not None:
                            break
                    else:
                        done += 1
        except UnconfirmedCommitError as exc:  # the turn's last commit, read at the block's end
            if exc is not reported:
                logger.error("%s: %s", exc.code.value, exc.message)
        self._give_back(failed)
        self.more_queued = done >= limit  # failed runs do not count: a failing queue waits a poll
        return driven

    def _claim_and_drive(
        self, states: frozenset[RunState], driven: list[RunView] | None
    ) -> tuple[_Driven | None, UnconfirmedCommitError | None]:
        """Claim the next run and drive it; ``None`` when none was claimed (or claiming failed).

        ``driven``: where the run's view goes once it is driven (``None``: not read).
        The error is the commit this drive found unconfirmed, if one was: the turn stops.
        """
        engine = self._engine
        taken: RunRecord | None = None
        try:
            taken = engine.store.claim(states, engine.owner, engine.lease_ttl_s, engine.clock())
            if taken is None:
                return None, None
            context = RunContext.load(taken, engine.store, engine.owner, engine.clock)
            if not taken.cancel_requested:  # read by the claim just now: no second read
                context.cancel_checked_at = time.monotonic()
            engine.drive(context)
            if driven is not None:
                driven.append(engine.view(taken.id))
        except UnconfirmedCommitError as exc:
            # A claim's commit, or a step's, may not have happened: whichever it was, the
            # database refused or lost a commit, so this turn stops here (a claim that did
            # not commit would be claimed again at once, and refused again).
            logger.error("%s: %s", exc.code.value, exc.message)
            # given back at the turn's end if the claim did commit
            return (None if taken is None else _Driven(taken.id, failed=True)), exc
        except AifrError as exc:  # one broken run must not stop the queue
            if taken is None:
                logger.error("claiming a run failed: %s: %s", exc.code.value, exc.message)
                return None, None
            logger.error("run %s: failed: %s: %s", taken.id, exc.code.value, exc.message)
            return _Driven(taken.id, failed=True), None
        except Exception:  # a bug in one run must not stop the others
            if taken is None:
                raise
            logger.exception("run %s: failed unexpectedly", taken.id)
            return _Driven(taken.id, failed=True), None
        return _Driven(taken.id, failed=False), None

    def _give_back(self, run_ids: Sequence[str]) -> None:
        """Release the leases of runs whose drive failed (those this worker still holds)."""
        engine = self._engine
        for run_id in run_ids:
            try:
                engine.store.release(run_id, engine.owner)
            except AifrError as exc:  # the database is away: the lease expires instead
                logger.error("run %s: releasing its lease failed: %s", run_id, exc.message)

    def is_ready(self, run: RunRecord) -> bool:
        """Whether a worker should drive ``run`` now (a waiting one: its approval is decided)."""
        if run.state is not RunState.WAITING_APPROVAL:
            return True
        approvals = self._engine.runtime.approvals
        if approvals is None:
            return False
        for step in self._engine.store.steps(run.id):
            if step.state is StepState.WAITING_APPROVAL and step.approval_id:
                try:
                    # get() marks an overdue request expired: the engine enforces expiry.
                    return approvals.get(step.approval_id).status is not ApprovalStatus.PENDING
                except ApprovalError:
                    return True
        return True

    def run_once(
        self, limit: int = 100, *, views: bool = True, queued: bool = True
    ) -> list[RunView]:
        """Drive every run that is ready and free; returns the runs it drove.

        ``views=False`` returns nothing and skips reading each driven run back (a run
        and its steps: two queries per run that a worker loop never looks at).
        ``queued=False`` leaves ``pending`` runs (queued, never started) to the workers:
        ``aifr run`` resumes runs a crash interrupted before it starts its own, but
        must not drain a queue that workers on other machines are there to take.

        First the work queue: runs that need no one's input are claimed one at a time
        (:meth:`RunStore.claim`, so concurrent workers never pick the same run), then
        the rest are scanned: decided approvals, and leases of dead local processes.
        """
        engine = self._engine
        skipped = frozenset() if queued else frozenset({RunState.PENDING})
        claimable = ACTIVE_STATES - skipped
        driven = self._claimed(limit, views, claimable)
        held: set[str] = set(engine.held())
        now = engine.clock()
        for run in engine.store.unfinished(_RESUMABLE - skipped, limit):
            if engine.is_stopping():
                break
            if (
                run.id in held
                or not self.may_take(run, now)
                or _queued_for_claim(run, claimable, now)
            ):
                continue
            try:
                if not self.is_ready(run):
                    continue
                taken = self.take(run)
                if taken is None or taken.state not in _RESUMABLE:
                    if taken is not None:
                        engine.store.release(run.id, engine.owner)
                    continue
                engine.drive(RunContext.load(taken, engine.store, engine.owner, engine.clock))
                if views:
                    driven.append(engine.view(run.id))
            except AifrError as exc:  # one broken run must not stop recovery of the others
                logger.error("run %s: recovery failed: %s: %s", run.id, exc.code.value, exc.message)
            except Exception:  # top-level handler per run: a bug in one run must not stop
                # recovery of the others, nor every later 'aifr run' (which recovers first)
                logger.exception("run %s: recovery failed unexpectedly", run.id)
        return driven
