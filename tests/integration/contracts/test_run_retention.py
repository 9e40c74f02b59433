"""Run retention (``prune_runs``) against every RunStore adapter: what goes, what stays, what is recorded."""

from __future__ import annotations

import pytest
from test_run_store import _event, _run, _step, store  # noqa: F401  # the adapter fixture

from aifr.audit import AuditRecord
from aifr.errors import ErrorCode, WorkflowError
from aifr.workflows import RunState, RunStore, prune_runs

FINISHED = (RunState.COMPLETED, RunState.COMPENSATED, RunState.FAILED, RunState.CANCELLED)
UNFINISHED = tuple(state for state in RunState if state not in FINISHED)


def _add(store: RunStore, run_id: str, state: RunState, at: float) -> None:  # noqa: F811
    store.create(
        _run(run_id, at, state=state),
        [_step(run_id), _step(run_id, "b", 1)],
        _event(),
    )


def _pruned_records(store: RunStore) -> list[AuditRecord]:  # noqa: F811
    ledger = store.ledger  # type: ignore[attr-defined]  # both adapters keep theirs
    return [r for r in ledger.records() if r.event.kind == "workflow.runs_pruned"]


def test_only_finished_runs_unchanged_before_the_cutoff_go_with_their_steps_and_one_record(
    store: RunStore,  # noqa: F811
) -> None:
    for n, state in enumerate(FINISHED):
        _add(store, f"run-old-{n}", state, 100.0)
    for n, state in enumerate(UNFINISHED):
        _add(store, f"run-busy-{n}", state, 100.0)
    _add(store, "run-new", RunState.COMPLETED, 900.0)

    report = prune_runs(store, older_than_s=500.0, actor="ops", now=1000.0)

    gone = sorted(f"run-old-{n}" for n in range(len(FINISHED)))
    assert report.runs == len(FINISHED) and not report.dry_run
    assert report.finished_before == 500.0
    assert all(store.get(run_id) is None for run_id in gone)
    assert all(store.steps(run_id) == [] for run_id in gone)
    kept = {r.id for r in store.list(limit=100)}
    assert kept == {f"run-busy-{n}" for n in range(len(UNFINISHED))} | {"run-new"}
    assert len(store.steps("run-busy-0")) == 2
    [record] = _pruned_records(store)
    assert record.event.principal == "ops"
    assert record.event.details["runs"] == gone
    assert record.event.details["count"] == len(FINISHED)
    assert record.event.details["finished_before"] == "1970-01-01T00:08:20.000000Z"
    assert store.ledger.verify().ok  # type: ignore[attr-defined]


def test_runs_go_in_batches_each_committed_with_its_own_record(
    store: RunStore,  # noqa: F811
) -> None:
    for n in range(5):
        _add(store, f"run-{n}", RunState.COMPLETED, 100.0 + n)

    report = prune_runs(store, older_than_s=0.0, actor="ops", now=1000.0, batch=2)

    assert report.runs == 5
    assert store.list() == []
    batches = [r.event.details["runs"] for r in _pruned_records(store)]
    assert batches == [["run-0", "run-1"], ["run-2", "run-3"], ["run-4"]]  # oldest first


def test_a_dry_run_counts_and_deletes_nothing(store: RunStore) -> None:  # noqa: F811
    _add(store, "run-1", RunState.FAILED, 100.0)
    _add(store, "run-2", RunState.COMPLETED, 100.0)

    report = prune_runs(
        store, older_than_s=0.0, actor="ops", now=1000.0, dry_run=True,
        states=frozenset({RunState.FAILED}),
    )  # fmt: skip

    assert report.runs == 1 and report.dry_run
    assert {r.id for r in store.list()} == {"run-1", "run-2"}
    assert _pruned_records(store) == []


def test_one_state_named_prunes_that_state_only(store: RunStore) -> None:  # noqa: F811
    _add(store, "run-1", RunState.FAILED, 100.0)
    _add(store, "run-2", RunState.COMPLETED, 100.0)

    report = prune_runs(
        store, older_than_s=0.0, actor="ops", now=1000.0, states=frozenset({RunState.FAILED})
    )

    assert report.runs == 1
    assert [r.id for r in store.list()] == ["run-2"]


@pytest.mark.parametrize("state", UNFINISHED)
def test_a_state_a_run_can_still_leave_is_refused_and_nothing_goes(
    store: RunStore,  # noqa: F811
    state: RunState,
) -> None:
    _add(store, "run-1", state, 100.0)

    with pytest.raises(WorkflowError) as refused:
        prune_runs(
            store, older_than_s=0.0, actor="ops", now=1000.0,
            states=frozenset({RunState.COMPLETED, state}),
        )  # fmt: skip

    assert refused.value.code is ErrorCode.WORKFLOW_BAD_STATE
    assert f"runs in state {state.value} are not finished" in refused.value.message
    assert store.get("run-1") is not None
    assert _pruned_records(store) == []


@pytest.mark.parametrize(
    ("age", "states", "words"),
    [
        (-1.0, None, "finite number of seconds >= 0"),
        (float("nan"), None, "finite number of seconds >= 0"),
        (0.0, frozenset(), "name at least one state"),
    ],
)
def test_a_bad_age_or_no_state_is_refused_before_anything_is_read(
    store: RunStore,  # noqa: F811
    age: float,
    states: frozenset[RunState] | None,
    words: str,
) -> None:
    _add(store, "run-1", RunState.COMPLETED, 100.0)
    chosen = {} if states is None else {"states": states}

    with pytest.raises(WorkflowError, match=words):
        prune_runs(store, older_than_s=age, actor="ops", now=1000.0, **chosen)  # type: ignore[arg-type]

    assert store.get("run-1") is not None
