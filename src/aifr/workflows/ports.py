"""What the workflow engine needs from storage: runs, steps, leases and an outbox.

``aifr.storage.sqlite.runs.SqliteRunStore`` implements :class:`RunStore` on the state
database. Every write that changes a run takes the audit event describing the change
and appends it in the same transaction (``AuditLedger.append_in``), together with any
notification to send, so a state change, its audit record and its webhook are never
half-written.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import JsonValue

from aifr.audit import AuditEvent, AuditRecord
from aifr.frozen import fast_init

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "Completion",
    "DefersCommits",
    "Notification",
    "NotificationOutbox",
    "OutboxItem",
    "PruneAudit",
    "RunFinish",
    "RunRecord",
    "RunState",
    "RunStore",
    "StepKey",
    "StepRecord",
    "StepState",
    "WorkerInfo",
    "WorkerRegistry",
]


class RunState(StrEnum):
    """Where a workflow run stands; every change is committed before the next step."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPLETED = "completed"
    FAILED = "failed"
    COMPENSATION_FAILED = "compensation_failed"
    NEEDS_REVIEW = "needs_review"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset(
    {RunState.COMPENSATED, RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED}
)
"""States a run never leaves."""

ACTIVE_STATES = frozenset({RunState.PENDING, RunState.RUNNING, RunState.COMPENSATING})
"""States in which a worker drives the run forward without anyone's input."""


class StepState(StrEnum):
    """Where one step of a run stands, including its compensation."""

    PENDING = "pending"
    WAITING_APPROVAL = "waiting_approval"
    COMPLETED = "completed"
    FAILED = "failed"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    NOT_COMPENSATED = "not_compensated"


@fast_init
@dataclass(frozen=True, slots=True)
class StepKey:
    """The idempotency key of one attempt of a step (or of its compensation).

    ``wf:<run>:<step>:<attempt>`` or ``wf:<run>:<step>:undo:<attempt>``: derived only
    from committed state, so the attempt interrupted by a crash is re-run with the same
    key and a capability that honours keys does its effect once.
    """

    run_id: str
    step_id: str
    attempt: int
    is_undo: bool = False

    PREFIX = "wf:"

    def __str__(self) -> str:
        middle = "undo:" if self.is_undo else ""
        return f"{self.PREFIX}{self.run_id}:{self.step_id}:{middle}{self.attempt}"

    @classmethod
    def parse(cls, key: str) -> StepKey | None:
        """The key's parts, or ``None`` when ``key`` is not a workflow step key."""
        if not key.startswith(cls.PREFIX):
            return None
        return _parse_step_key(key)


@functools.lru_cache(maxsize=4096)
def _parse_step_key(key: str) -> StepKey | None:
    """Parse a ``wf:`` key; cached, as each is parsed three times per step."""
    parts = key[len(StepKey.PREFIX) :].split(":")
    if len(parts) == 3 and parts[2].isdigit():
        return StepKey(parts[0], parts[1], int(parts[2]))
    if len(parts) == 4 and parts[2] == "undo" and parts[3].isdigit():
        return StepKey(parts[0], parts[1], int(parts[3]), is_undo=True)
    return None


@fast_init
@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step of one run as stored.

    ``attempt`` is the attempt the step is on; the idempotency key of that attempt is
    derived from run id, step id and attempt, so re-running an interrupted attempt
    after a crash reuses its key. ``undo_attempt`` does the same for compensation.
    """

    run_id: str
    step_id: str
    index: int
    capability: str
    state: StepState = StepState.PENDING
    attempt: int = 1
    fingerprint: str | None = None
    inputs: dict[str, JsonValue] | None = None
    output: JsonValue = None
    error: dict[str, JsonValue] | None = None
    approval_id: str | None = None
    audit_id: str | None = None
    next_attempt_at: float | None = None
    finished_at: float | None = None
    undo_attempt: int = 1
    undo_capability: str | None = None
    undo_output: JsonValue = None
    undo_error: dict[str, JsonValue] | None = None
    undo_approval_id: str | None = None

    def evolve(self, **changes: object) -> StepRecord:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)  # type: ignore[arg-type]  # dataclass field kwargs


@fast_init
@dataclass(frozen=True, slots=True)
class RunRecord:
    """One workflow run: its definition snapshot, inputs, principal, state and lease.

    ``definition`` is the workflow as it was when the run started, so editing the YAML
    never changes a run in flight. ``fingerprints`` maps step id to the capability
    fingerprint the run started with (the drift check compares against it).
    """

    id: str
    workflow: str
    workflow_version: str
    definition: dict[str, JsonValue]
    inputs: dict[str, JsonValue]
    principal: str
    roles: tuple[str, ...]
    state: RunState
    created_at: float
    updated_at: float
    fingerprints: dict[str, str] = field(default_factory=dict)
    error: dict[str, JsonValue] | None = None
    failed_step: str | None = None
    cancel_requested: bool = False
    lease_owner: str | None = None
    lease_expires_at: float | None = None

    def evolve(self, **changes: object) -> RunRecord:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)  # type: ignore[arg-type]  # dataclass field kwargs


@fast_init
@dataclass(frozen=True, slots=True)
class RunFinish:
    """A run's final write, carried by the commit of its last step's success.

    ``run`` is the run as it ends (completed, lease released) and ``audit`` the event
    that tells it; ``owner`` must still hold the lease when the step commits.
    """

    run: RunRecord
    audit: AuditEvent
    owner: str


@fast_init
@dataclass(frozen=True, slots=True)
class Completion:
    """How a step key's success was recorded by the runtime's step-result store.

    ``finished_run`` is the run's final record when the same commit also finished the
    run (see :meth:`RunStore.begin_attempt`).
    """

    finished_run: RunRecord | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    """A message to deliver at least once: a signed webhook body and where it goes."""

    kind: str
    url: str
    body: dict[str, JsonValue]


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A queued notification with its delivery bookkeeping."""

    id: int
    notification: Notification
    created_at: float
    attempts: int
    next_attempt_at: float
    delivered_at: float | None = None
    last_error: str | None = None


@runtime_checkable
class DefersCommits(Protocol):
    """A :class:`RunStore` that can let a run's step writes return before their commit.

    The engine drives each run inside :meth:`deferred_commits`: a lone step's write
    comes back with its rows while the server flushes its commit, and the runtime
    settles it (``SettlesCommits``) before the next step's effect. So the next step's
    checks overlap the commit, and no effect precedes the durable record of the step
    before it. SQLite commits in-process and lacks this.
    """

    def deferred_commits(self) -> AbstractContextManager[None]:
        """This thread's step writes may be confirmed later, and are by the block's end.

        Raises:
            UnconfirmedCommitError: at the block's end, the last write's commit was not
                confirmed.
        """
        ...

    def claiming_ahead(
        self,
        states: frozenset[RunState],
        owner: str,
        ttl_s: float,
        clock: Callable[[], float],
        wanted: Callable[[], bool],
    ) -> AbstractContextManager[None]:
        """Inside the block, a run's end written by this thread also claims its next run.

        Only when ``wanted()`` says the thread drives another run after this one. The
        claim (as :meth:`RunStore.claim` with these arguments, the time read from
        ``clock``) shares the run end's commit, and the thread's next :meth:`RunStore.claim`
        in ``states`` for ``owner`` returns what it took. A run claimed this way and not
        taken by the block's end has its lease given back.
        """
        ...


class RunStore(Protocol):
    """Durable runs and steps with leases, the engine's only view of storage."""

    def create(
        self,
        run: RunRecord,
        steps: Sequence[StepRecord],
        audit: AuditEvent,
        *,
        start: AuditEvent | None = None,
    ) -> AuditRecord:
        """Insert a run (holding its lease) and its steps, and append ``audit``, at once.

        ``start``: for a queued (pending) run, the event that will tell it started. The
        store keeps it and appends it in the transaction of the :meth:`claim` that first
        takes the run, which then returns the run already running (one commit fewer per
        queued run); a run leased another way is started by the engine, which commits
        the event itself when it drives the run.
        """
        ...

    def save(
        self,
        run: RunRecord,
        steps: Sequence[StepRecord] = (),
        audit: AuditEvent | None = None,
        notification: Notification | None = None,
        *,
        owner: str | None = None,
    ) -> AuditRecord | None:
        """Write the run and the given steps, append ``audit`` and queue ``notification``.

        With ``owner`` set the write happens only while ``owner`` (or nobody) holds the
        run's lease; ``run.lease_owner`` is what the run keeps afterwards, so a final
        write can release the lease in the same transaction.

        Raises:
            WorkflowError: ``workflow.lease_lost`` when ``run.lease_owner`` no longer
                holds the run's lease (another worker took it over).
        """
        ...

    def get(self, run_id: str) -> RunRecord | None:
        """The run, or ``None``."""
        ...

    def begin_attempt(self, key: str, *, unrecorded: bool, finish: RunFinish | None) -> None:
        """Say what the lease holder knows of the step attempt ``key`` it is about to invoke.

        ``unrecorded``: the attempt has no stored result (the holder's lease is valid and
        its step record says so), so the runtime's read for one is skipped. ``finish``:
        the step is the run's last, and its success commits the run's end with it (one
        commit fewer per run). :meth:`consume_completion` forgets both.
        """
        ...

    def consume_completion(self, key: str) -> Completion | None:
        """How the step key's success was recorded with its audit record (asked once).

        The runtime's step-result store records a step's success in the invocation's own
        transaction; this tells the engine so, sparing it a read and a commit. ``None``
        when the store did not record it.
        """
        ...

    def is_cancel_requested(self, run_id: str) -> bool:
        """Whether someone asked to cancel the run (checked before every step)."""
        ...

    def request_cancel(self, run_id: str) -> None:
        """Ask the run's lease holder to stop and compensate at the next step."""
        ...

    def take_over(self, run_id: str, dead_owner: str, owner: str, ttl_s: float, now: float) -> bool:
        """Take a lease from ``dead_owner``, whose process is known to be gone."""
        ...

    def steps(self, run_id: str) -> list[StepRecord]:
        """The run's steps in definition order."""
        ...

    def step(self, run_id: str, step_id: str) -> StepRecord | None:
        """One step of a run, or ``None``."""
        ...

    def list(self, *, state: RunState | None = None, limit: int = 100) -> list[RunRecord]:
        """Runs, newest first, optionally of one state."""
        ...

    def acquire(self, run_id: str, owner: str, ttl_s: float, now: float) -> RunRecord | None:
        """Take the run's lease if free, expired or already ``owner``'s; else ``None``."""
        ...

    def claim(
        self, states: frozenset[RunState], owner: str, ttl_s: float, now: float
    ) -> RunRecord | None:
        """Lease the oldest run in ``states`` whose lease is free or expired; else ``None``.

        The work queue: concurrent workers each get a different run (PostgreSQL skips
        rows another worker is claiming, ``FOR UPDATE SKIP LOCKED``), and the lease's
        epoch goes up, fencing off the run's previous holder. A pending run created with
        a ``start`` event (see :meth:`create`) may come back running, its event appended
        by the claim's own transaction.
        """
        ...

    def renew(self, run_ids: Sequence[str], owner: str, ttl_s: float, now: float) -> None:
        """Extend ``owner``'s leases on ``run_ids`` (the heartbeat)."""
        ...

    def release(self, run_id: str, owner: str) -> None:
        """Give the lease back."""
        ...

    def unfinished(self, states: frozenset[RunState], limit: int = 100) -> builtins.list[RunRecord]:
        """Runs in one of ``states``, oldest first (recovery and the worker's queue)."""
        ...

    def prunable(self, states: frozenset[RunState], finished_before: float) -> int:
        """How many runs in ``states`` last changed before ``finished_before``."""
        ...

    def prune(
        self, states: frozenset[RunState], finished_before: float, audit: PruneAudit, limit: int
    ) -> builtins.list[str]:
        """Delete up to ``limit`` such runs, oldest first, with their steps; their ids.

        One transaction: the runs and steps go, and ``audit(ids)`` (the record naming
        them) is appended, or nothing happens. ``states`` holds terminal states only
        (:data:`TERMINAL_STATES`): a run that can still change is never deleted.
        """
        ...


PruneAudit = Callable[[Sequence[str]], AuditEvent]
"""The audit event recording that the runs of the given ids were deleted."""


class NotificationOutbox(Protocol):
    """Notifications queued by :meth:`RunStore.save`, delivered with retries."""

    def due(self, now: float, limit: int = 50) -> builtins.list[OutboxItem]:
        """Undelivered items whose next attempt is due, oldest first."""
        ...

    def delivered(self, item_id: int, now: float) -> None:
        """Mark an item delivered."""
        ...

    def retry_later(self, item_id: int, next_attempt_at: float, error: str) -> None:
        """Count a failed attempt and schedule the next one."""
        ...

    def pending(self) -> int:
        """How many items are still undelivered."""
        ...


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One ``aifr worker`` process as the registry knows it.

    ``id`` is its first engine's lease owner id (``host:pid:nonce``); every engine of the
    process leases runs as ``host:pid:<its own nonce>``, so ``runs`` counts the unexpired
    leases whose owner starts with ``host:pid:`` (filled in by :meth:`WorkerRegistry.workers`).
    """

    id: str
    host: str
    pid: int
    concurrency: int
    version: str
    started_at: float
    seen_at: float
    runs: int = 0

    @property
    def lease_prefix(self) -> str:
        """What every lease owner id of this process starts with."""
        return f"{self.host}:{self.pid}:"


class WorkerRegistry(Protocol):
    """Which worker processes are alive, on any machine sharing the database.

    Each worker announces itself as it starts, says it is still there every few seconds
    and leaves when it stops; a worker killed or cut off simply stops being seen.
    """

    def announce(self, worker: WorkerInfo) -> None:
        """Add ``worker`` (or refresh it), and forget workers unseen for a day."""
        ...

    def seen(self, worker_id: str, now: float) -> bool:
        """Note that the worker is still alive at ``now``; ``False`` if it was forgotten."""
        ...

    def leave(self, worker_id: str) -> None:
        """Remove a worker that stopped."""
        ...

    def workers(self, now: float) -> builtins.list[WorkerInfo]:
        """Every known worker, most recently started first, with the runs it holds at ``now``."""
        ...

    def live_on(self, host: str, since: float) -> int:
        """How many workers on ``host`` were seen at ``since`` or later (one cheap read)."""
        ...
