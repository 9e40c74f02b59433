"""``Retention``'s schedule: once per period, and a failed prune retried in a minute, not every turn.

The store here only counts calls and fails on demand: what is under test is when the
rule runs, not how a store deletes (the contract suite runs that on both backends).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from aifr.errors import StorageError
from aifr.workflows import Retention, RunState
from aifr.workflows.ports import PruneAudit
from aifr.workflows.retention import RETRY_S


class _CountingStore:
    def __init__(self) -> None:
        self.calls: list[float] = []
        self.failing = False

    def prune(
        self, states: frozenset[RunState], finished_before: float, audit: PruneAudit, limit: int
    ) -> Sequence[str]:
        self.calls.append(finished_before)
        if self.failing:
            raise StorageError("the database is away")
        return []


def test_a_failed_prune_is_retried_a_minute_later_and_then_hourly() -> None:
    store = _CountingStore()
    now = [10_000.0]
    retention = Retention(
        store,  # type: ignore[arg-type]  # only prune is called
        older_than_s=100.0, actor="ops", every_s=3600.0, clock=lambda: now[0],
    )  # fmt: skip

    store.failing = True
    with pytest.raises(StorageError):
        retention.prune_if_due()
    now[0] += RETRY_S - 1
    skipped = retention.prune_if_due()
    store.failing = False
    now[0] += 1
    report = retention.prune_if_due()
    now[0] += 3599
    later = retention.prune_if_due()

    assert skipped is None and later is None
    assert report is not None and report.runs == 0
    assert store.calls == [9_900.0, 9_900.0 + RETRY_S]
