"""Fencing for audit records: a leased run's records are written only under its lease epoch.

A workflow step's attempt runs through the governed runtime, which writes the
attempt's audit record itself: with the step's result when it succeeds (the step store
already fences that write), or alone when it fails, is denied, waits for an approval or
replays a stored result. :class:`FencedLedger` is the ledger the runtime (and the
approval store it uses) write through: a record whose ``idempotency_key`` is a step key
of an attempt this process began under a lease (``RunStore.begin_attempt``) is appended
only while the run's ``lease_epoch`` is still the epoch the attempt began with, checked
by the database inside the appending transaction. A worker whose lease expired and was
taken meanwhile gets ``workflow.lease_lost`` and its record is not written; its own
clock plays no part. Every other record goes to the ordinary ledger unchanged (group
commit included), so the chain stays one chain.
"""

from __future__ import annotations

from typing import Any, Protocol

from aifr.audit import AuditEvent, AuditLedger, AuditRecord
from aifr.audit.ledger import LedgerStats
from aifr.workflows.ports import StepKey

__all__ = ["FencedLedger", "FencingRuns"]


class FencingRuns(Protocol):
    """What :class:`FencedLedger` needs of a run store (both backends have it)."""

    def fence(self, key: str) -> int | None:
        """The lease epoch the attempt ``key`` began under (``None``: not in flight here)."""
        ...

    def check_fence_in(
        self, conn: Any, run_id: str, epoch: int
    ) -> None:  # the backend's connection
        """In the caller's transaction: raise ``workflow.lease_lost`` unless ``epoch`` holds."""
        ...

    def append_fenced(self, event: AuditEvent, run_id: str, epoch: int) -> AuditRecord:
        """Append ``event`` in one transaction that first checks the epoch."""
        ...


class FencedLedger(AuditLedger):
    """An :class:`AuditLedger` whose leased-run records are conditional on the lease epoch.

    It shares ``ledger``'s store, and its group-commit queue for every record that
    needs no fence; reading, verifying and checkpoints are the store's, as before.
    """

    def __init__(self, ledger: AuditLedger, runs: FencingRuns) -> None:
        super().__init__(ledger.store)
        self._ledger = ledger
        self._runs = runs

    def _fence(self, event: AuditEvent) -> tuple[str, int] | None:
        """The run and epoch ``event`` is fenced on, or ``None`` (not an attempt of ours)."""
        key = event.details.get("idempotency_key")
        if not isinstance(key, str):
            return None
        parsed = StepKey.parse(key)
        if parsed is None:
            return None
        epoch = self._runs.fence(key)
        return (parsed.run_id, epoch) if epoch is not None else None

    def append(self, event: AuditEvent) -> AuditRecord:
        """Append ``event``; a leased attempt's record only under its lease epoch.

        Raises:
            WorkflowError: ``workflow.lease_lost`` when the run's lease changed hands.
            AuditError: the event is not JSON-safe, or the append failed.
            StorageError: the database failed.
        """
        fence = self._fence(event)
        if fence is None:
            return self._ledger.append(event)
        return self._runs.append_fenced(event, *fence)

    def append_in(self, conn: object, event: AuditEvent) -> AuditRecord:
        """Append ``event`` in the caller's transaction, refused when its fence no longer holds.

        Raises:
            WorkflowError: ``workflow.lease_lost``; the caller's transaction rolls back.
        """
        fence = self._fence(event)
        if fence is not None:
            self._runs.check_fence_in(conn, *fence)
        return self._ledger.append_in(conn, event)

    @property
    def stats(self) -> LedgerStats:
        """The wrapped ledger's group-commit counters."""
        return self._ledger.stats

    def pending(self) -> int:
        """Appends queued in the wrapped ledger."""
        return self._ledger.pending()
