"""What the invocation pipeline needs from storage, as ports over its own records.

Adapters live in ``aifr.storage`` (``SqliteApprovalStore``, ``SqliteIdempotencyStore``,
``SqliteCircuitStore``); only ``aifr.app`` picks them. Every write that must be audited
takes the :class:`~aifr.audit.AuditEvent` and appends it in the same transaction, so a
state change and its audit record are never half-written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import JsonValue

from aifr.audit import AuditEvent, AuditRecord

__all__ = [
    "ApprovalRecord",
    "ApprovalUpdate",
    "ApprovalStatus",
    "ApprovalStore",
    "ApprovalVote",
    "CircuitRecord",
    "CircuitStore",
    "ForeseesCompletions",
    "IdempotencyRecord",
    "IdempotencyStore",
    "SettlesCommits",
    "TokenRecord",
    "TokenStore",
]


class ApprovalStatus(StrEnum):
    """Life of an approval request: pending, then exactly one terminal-ish state."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CONSUMED = "consumed"
    WITHDRAWN = "withdrawn"
    """The request no longer stands (its workflow run was cancelled): nobody may decide
    or execute it."""


@dataclass(frozen=True, slots=True)
class ApprovalVote:
    """One approver's yes, with their comment and when (epoch seconds)."""

    approver: str
    at: float
    comment: str = ""
    roles: tuple[str, ...] = ()
    """The roles the approver held when voting (for ``quorum_roles``)."""


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """A durable request for a human approval of one exact invocation.

    ``request_digest`` binds the approval to the capability id and fingerprint, the
    canonical inputs and the principal: any change needs a new approval. ``inputs``
    are kept as given (``secret://`` references unresolved) so an approved request can
    be executed later from the CLI.
    """

    id: str
    capability_id: str
    capability_version: str
    fingerprint: str
    principal: str
    roles: tuple[str, ...]
    inputs: dict[str, JsonValue]
    request_digest: str
    risk: str
    rule_id: str | None
    reason: str
    approver_roles: tuple[str, ...]
    quorum: int
    created_at: float
    expires_at: float
    status: ApprovalStatus = ApprovalStatus.PENDING
    votes: tuple[ApprovalVote, ...] = ()
    decided_by: str | None = None
    decided_at: float | None = None
    decision_comment: str = ""
    consumed_at: float | None = None
    consumed_by_request: str | None = None
    result: dict[str, JsonValue] | None = None
    request_id: str | None = None
    workflow_id: str | None = None
    on_behalf_of: tuple[str, ...] = field(default_factory=tuple)
    quorum_roles: tuple[tuple[str, int], ...] = ()
    """Separation of duties: distinct approvers needed per role (the requester never counts)."""
    idempotency_key: str | None = None
    """The idempotency key of the call that asked (a workflow step's run, step and
    attempt): an open request is reused only by a call with the same key, so two runs
    asking for the same step each get, and need, their own approval."""

    def is_expired(self, now: float) -> bool:
        """Whether a still-pending or approved request is past its expiry."""
        return self.status in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED) and (
            now >= self.expires_at
        )

    def evolve(self, **changes: object) -> ApprovalRecord:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)  # type: ignore[arg-type]  # dataclass field kwargs


ApprovalUpdate = Callable[[ApprovalRecord], tuple[ApprovalRecord, AuditEvent | None]]


class ApprovalStore(Protocol):
    """Durable approval requests with atomic read-modify-write."""

    def create(self, record: ApprovalRecord, audit: AuditEvent) -> AuditRecord:
        """Insert ``record`` and append ``audit`` in one transaction."""
        ...

    def get(self, approval_id: str) -> ApprovalRecord | None:
        """The request with that id, or ``None``."""
        ...

    def find_open(
        self, request_digest: str, now: float, idempotency_key: str | None = None
    ) -> ApprovalRecord | None:
        """A pending, unexpired request for exactly this digest and idempotency key."""
        ...

    def list(
        self, *, status: ApprovalStatus | None = None, limit: int = 100
    ) -> list[ApprovalRecord]:
        """Requests, newest first, optionally of one status."""
        ...

    def update(
        self, approval_id: str, change: ApprovalUpdate
    ) -> tuple[ApprovalRecord, AuditRecord | None]:
        """Apply ``change`` to the current record inside one write transaction.

        ``change`` returns the new record and the audit event to append with it (the
        appended record is returned); if it raises, nothing is written. Concurrent updates of one request serialize, so
        check-then-set rules (consume once, vote once) hold.

        Raises:
            ApprovalError: ``approval.not_found`` or whatever ``change`` raises.
        """
        ...


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """A claimed idempotency key: the request it was used for and, once done, its result."""

    principal: str
    key: str
    request_digest: str
    created_at: float
    result: dict[str, JsonValue] | None = None
    completed_at: float | None = None

    @property
    def is_complete(self) -> bool:
        """Whether the first call finished and its result is stored."""
        return self.result is not None


class IdempotencyStore(Protocol):
    """Idempotency keys scoped per principal; the first call's result is kept."""

    def get(self, principal: str, key: str) -> IdempotencyRecord | None:
        """The record for this principal's key, or ``None``."""
        ...

    def claim(
        self, principal: str, key: str, request_digest: str, now: float
    ) -> IdempotencyRecord | None:
        """Claim the key for a new execution; ``None`` if claimed now, else the existing record."""
        ...

    def complete(
        self,
        principal: str,
        key: str,
        result: dict[str, JsonValue],
        now: float,
        audit: AuditEvent,
    ) -> AuditRecord:
        """Store the result and append ``audit`` in one transaction."""
        ...

    def release(self, principal: str, key: str) -> None:
        """Drop an unfinished claim (the call stopped before executing)."""
        ...


@runtime_checkable
class SettlesCommits(Protocol):
    """An :class:`IdempotencyStore` whose step writes may return before their commit is confirmed.

    Inside a workflow engine's deferral (PostgreSQL's ``deferring``), a step's
    ``complete`` returns once its rows are back, while the server commits; the runtime
    calls :meth:`settle` before the next effect, so nothing happens before the step
    before it is durably recorded. A store without deferral simply lacks this.
    """

    def defers_commits(self) -> bool:
        """Whether this thread's step writes may now return before their commits are confirmed.

        Then the time between a step's write and the next effect is spent waiting for
        that commit, and the runtime does there what it otherwise does after the effect.
        """
        ...

    def settle(self) -> None:
        """Wait until this thread's last step write is confirmed committed.

        Raises:
            UnconfirmedCommitError: it was not (its outcome is unknown); never a step's
                outcome: the runtime lets it end the call.
        """
        ...


@runtime_checkable
class ForeseesCompletions(Protocol):
    """An :class:`IdempotencyStore` that can prepare a key's completion before the effect.

    Where the runtime has time before a step's effect (a previous commit still flushing,
    see :class:`SettlesCommits`), it builds the result an ``ok`` end would store and
    hands it here: the store encodes what it can of it then, and its ``complete`` for
    that very object (the same ``result``, on the same thread) takes the work from here.
    Handed any other object, ``complete`` does it all as usual, so a miss costs time,
    never a different row.
    """

    def foresee(self, principal: str, key: str, result: dict[str, JsonValue]) -> None:
        """Prepare ``complete(principal, key, result, ...)`` now, before the effect.

        Until that ``complete``, the caller may set ``result["output"]`` and nothing
        else of it: the output is the one part of a stored result the effect decides.
        """
        ...


@dataclass(frozen=True, slots=True)
class CircuitRecord:
    """A capability's circuit-breaker state as last recorded."""

    capability_id: str
    state: str
    failures: int
    opened_at: float | None
    updated_at: float


class CircuitStore(Protocol):
    """Where breaker state is recorded so restarts and ``aifr capabilities show`` see it."""

    def save(self, record: CircuitRecord) -> None:
        """Insert or replace the capability's state."""
        ...

    def load(self) -> list[CircuitRecord]:
        """Every recorded state."""
        ...


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One minted bearer token, without the token itself (only its SHA-256 digest)."""

    digest: str
    principal: str
    roles: tuple[str, ...] = ()
    operator: str | None = None
    label: str = ""
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None

    def evolve(self, **changes: object) -> TokenRecord:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)  # type: ignore[arg-type]  # dataclass field kwargs


class TokenStore(Protocol):
    """Where bearer-token digests live, shared by every process of a project."""

    def add(self, record: TokenRecord) -> None:
        """Store a new token record."""
        ...

    def get(self, digest: str) -> TokenRecord | None:
        """The record stored under ``digest``, revoked or not."""
        ...

    def list(self) -> list[TokenRecord]:
        """Every record, oldest first."""
        ...

    def revoke(self, digest: str, at: float) -> None:
        """Mark the record under ``digest`` revoked at ``at``."""
        ...
