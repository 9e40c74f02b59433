"""Run retention: finished runs are deleted once they are older than a project keeps them.

A run's rows are the engine's working state, not the record: every change a run went
through is in the audit ledger, which retention never touches. So finished runs
(completed, compensated, failed, cancelled) may go once nobody needs to open them by
id, as Temporal's namespace retention and DBOS's garbage collection let them go; a run
that can still change (pending, running, waiting for an approval, compensating, with a
failed compensation or needing review) never goes, whatever its age.

Each batch is deleted in one transaction with one ``workflow.runs_pruned`` audit record
naming its runs, so the ledger says which runs were deleted, when, by whom, and under
which rule. ``aifr runs prune`` prunes on demand; ``aifr worker`` prunes every hour when
``workflows.retain_finished_days`` is set.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import JsonValue

from aifr.audit import AuditEvent
from aifr.audit.record import utc_timestamp
from aifr.errors import WorkflowError
from aifr.workflows.ports import TERMINAL_STATES, RunState, RunStore

__all__ = ["DAY_S", "PRUNE_BATCH", "PruneReport", "Retention", "prune_runs"]

DAY_S = 86_400.0
RETRY_S = 60.0
"""How long a worker waits to prune again after a prune failed."""
PRUNE_BATCH = 500
"""Runs deleted per transaction: a batch holds the write lock (SQLite) or its rows
(PostgreSQL) briefly, and its audit record lists at most this many ids."""


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What one prune did (or, with ``dry_run``, would do)."""

    states: tuple[RunState, ...]
    finished_before: float
    runs: int
    dry_run: bool = False

    def to_dict(self) -> dict[str, JsonValue]:
        """The report as ``aifr runs prune --json`` and ``POST /v1/runs/prune`` answer it."""
        return {
            "runs": self.runs,
            "dry_run": self.dry_run,
            "finished_before": self.finished_before,
            "states": [state.value for state in self.states],
        }


def prune_runs(
    store: RunStore,
    *,
    older_than_s: float,
    actor: str,
    states: frozenset[RunState] = TERMINAL_STATES,
    now: float | None = None,
    dry_run: bool = False,
    batch: int = PRUNE_BATCH,
    details: dict[str, str] | None = None,
) -> PruneReport:
    """Delete the runs in ``states`` unchanged for ``older_than_s`` seconds, in batches.

    ``dry_run`` counts them and deletes nothing. ``details`` are added to each batch's
    audit record (the worker names itself there).

    Raises:
        WorkflowError: ``workflow.invalid`` for a negative or non-finite age or a batch
            under 1; ``workflow.bad_state`` for a state a run can still leave.
        StorageError: the database failed (the batches committed before stay deleted).
    """
    if not math.isfinite(older_than_s) or older_than_s < 0:
        raise WorkflowError(
            f"the age of runs to prune must be a finite number of seconds >= 0, "
            f"not {older_than_s!r}",
            older_than_s=str(older_than_s),
        )
    if batch < 1:
        raise WorkflowError(f"the prune batch must be at least 1, not {batch}", batch=batch)
    # never before the epoch: a date that far back has no calendar form to record
    finished_before = max(0.0, (time.time() if now is None else now) - older_than_s)
    chosen = tuple(sorted(states))
    if dry_run:
        count = store.prunable(frozenset(states), finished_before)
        return PruneReport(chosen, finished_before, count, dry_run=True)

    def audit(ids: Sequence[str]) -> AuditEvent:
        return AuditEvent(
            kind="workflow.runs_pruned",
            principal=actor,
            outcome="ok",
            details={
                "runs": list(ids),
                "count": len(ids),
                "finished_before": utc_timestamp(datetime.fromtimestamp(finished_before, UTC)),
                "states": [state.value for state in chosen],
                **(details or {}),
            },
        )

    total = 0
    while True:
        ids = store.prune(frozenset(states), finished_before, audit, batch)
        total += len(ids)
        if len(ids) < batch:
            return PruneReport(chosen, finished_before, total)


class Retention:
    """A worker's retention rule, applied at most once per ``every_s``.

    ``details`` go into each batch's audit record (the worker and the setting that
    asked for the pruning).
    """

    def __init__(
        self,
        store: RunStore,
        *,
        older_than_s: float,
        actor: str,
        details: dict[str, str] | None = None,
        every_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._older_than_s = older_than_s
        self._actor = actor
        self._details = dict(details or {})
        self._every_s = every_s
        self._clock = clock
        self._next_at = 0.0

    def prune_if_due(self) -> PruneReport | None:
        """Prune now if the last prune was ``every_s`` ago (or never); else ``None``.

        Raises:
            StorageError: the database failed; a call a minute later tries again.
        """
        now = self._clock()
        if now < self._next_at:
            return None
        # A failure is tried again in a minute, not at every turn of the worker's loop.
        self._next_at = now + min(self._every_s, RETRY_S)
        report = prune_runs(
            self._store,
            older_than_s=self._older_than_s,
            actor=self._actor,
            now=now,
            details=self._details,
        )
        self._next_at = now + self._every_s
        return report
