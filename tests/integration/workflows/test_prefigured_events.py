"""PostgreSQL: a step's ``ok`` record and result, encoded before its effect, are those built after.

Where a step's commit may still be flushing while the next step is checked, the runtime
builds and encodes that step's ``ok`` event then, and after the effect fills in the
duration (``aifr.audit.prefigure``); it builds the result the step would store then too,
and the step store encodes it (``ForeseesCompletions``), the output filled in after the
effect. These tests run real workflows on a real server and check that the records and
rows so made are those made afresh: the chain verifies, and each record's details and
each step's stored result are those of the same run with both off.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from wf_env import WfEnv

from aifr.audit import ledger as ledger_module
from aifr.invocation import CallOptions
from aifr.invocation import runtime as runtime_module
from aifr.storage.postgres.step_results import PostgresStepResultStore
from aifr.workflows import RunState, WorkflowBuilder

pytestmark = pytest.mark.pg

_SPEC = (
    WorkflowBuilder("three")
    .step("s0", "ops.check", service="web")
    .step("s1", "test.noop", n=1)
    .step("s2", "ops.check", service="db")
    .build()
)
_VARYING = {"duration_s", "idempotency_key"}  # this call's own: its time, its run's id
_OWN_IDS = {"request_id", "trace_id"}  # a stored result's: this call's and its run's ids


def _step_details(env: WfEnv, run_id: str) -> list[dict[str, Any]]:
    return [
        dict(record.event.details)
        for record in env.ledger.records()
        if record.event.run_id == run_id and record.event.kind == "invocation"
    ]


def test_step_records_come_from_their_templates_and_match_records_built_afresh(
    pg_env: WfEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[bool] = []
    known = ledger_module.known_prepared

    def counted(event: Any) -> Any:
        found = known(event)
        served.append(found is not None)
        return found

    monkeypatch.setattr(ledger_module, "known_prepared", counted)
    templated = pg_env.engine.start(_SPEC, {}, "agent")
    pg_env.runtime._defers_commits = lambda: False  # the same run, records built afterwards
    afresh = pg_env.engine.start(_SPEC, {}, "agent")

    assert templated.state is afresh.state is RunState.COMPLETED
    assert served.count(True) == 3  # each of the templated run's steps, none of the other's
    assert pg_env.ledger.verify().ok
    ours, theirs = _step_details(pg_env, templated.run.id), _step_details(pg_env, afresh.run.id)
    assert [sorted(d) for d in ours] == [sorted(d) for d in theirs]
    for mine, other in zip(ours, theirs, strict=True):
        assert isinstance(mine["duration_s"], float) and mine["duration_s"] >= 0
        assert {k: v for k, v in mine.items() if k not in _VARYING} == {
            k: v for k, v in other.items() if k not in _VARYING
        }


def test_a_keyed_call_outside_a_workflow_builds_its_record_after_its_effect(
    pg_env: WfEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No commit to overlap there: building the event before the effect would only move
    # the work, so it is not done.
    prefigured: list[object] = []
    monkeypatch.setattr(
        "aifr.invocation.runtime.prefigure_ok", lambda call, ledger: prefigured.append(call)
    )

    result = pg_env.runtime.invoke(
        "test.noop", {"n": 2}, "agent", CallOptions(idempotency_key="outside-1")
    )

    assert result.ok and prefigured == []
    assert pg_env.ledger.verify().ok


def test_a_step_that_fails_is_recorded_afresh_and_the_chain_still_verifies(
    pg_env: WfEnv,
) -> None:
    spec = (
        WorkflowBuilder("failing")
        .step("s0", "test.noop", n=1)
        .step("s1", "ops.check", service="web", healthy=False)
        .build()
    )

    view = pg_env.engine.start(spec, {}, "agent")

    assert view.state is not RunState.COMPLETED
    assert pg_env.ledger.verify().ok
    statuses = [d["status"] for d in _step_details(pg_env, view.run.id)]
    assert statuses[:2] == ["ok", "failed"]


def _stored_steps(env: WfEnv, run_id: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    """Each step's id, output column and stored result, less this call's own ids, in order."""
    with env.database.connection() as conn:
        rows = conn.execute(
            "SELECT step_id, output, result FROM wf_steps WHERE run_id = %s ORDER BY idx",
            (run_id,),
        ).fetchall()
    return [
        (step, output, {k: v for k, v in json.loads(result).items() if k not in _OWN_IDS})
        for step, output, result in rows
    ]


def _count_taken(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each step completion found its result foreseen, in order."""
    taken: list[bool] = []
    take = PostgresStepResultStore._take_foreseen

    def counted(store: PostgresStepResultStore, principal: str, key: str, result: Any) -> Any:
        found = take(store, principal, key, result)
        taken.append(found is not None)
        return found

    monkeypatch.setattr(PostgresStepResultStore, "_take_foreseen", counted)
    return taken


def test_step_results_come_foreseen_and_match_results_stored_afresh(
    pg_env: WfEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = _count_taken(monkeypatch)
    foreseen = pg_env.engine.start(_SPEC, {}, "agent")
    pg_env.runtime._defers_commits = lambda: False  # the same run, results stored afresh
    afresh = pg_env.engine.start(_SPEC, {}, "agent")

    assert foreseen.state is afresh.state is RunState.COMPLETED
    assert taken == [True] * 3 + [False] * 3  # each of the first run's steps, none of the other's
    ours, theirs = _stored_steps(pg_env, foreseen.run.id), _stored_steps(pg_env, afresh.run.id)
    assert ours == theirs
    assert [output for _, output, _ in ours] == [
        json.dumps(step.output, separators=(",", ":"), sort_keys=True)
        for step in pg_env.runs.steps(foreseen.run.id)
    ]
    assert all(result["status"] == "ok" for _, _, result in ours)
    assert pg_env.ledger.verify().ok


def test_a_result_other_than_the_foreseen_one_is_stored_as_handed(
    pg_env: WfEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store takes its encoding only for the very object it foresaw: handed another
    # (here a copy that says something else), it encodes that one, never the stale one.
    taken = _count_taken(monkeypatch)
    finished = runtime_module.finished_stored_result

    def copied(*args: Any, **kwargs: Any) -> Any:
        result = dict(finished(*args, **kwargs))
        result["capability_version"] = "handed-not-foreseen"
        return result

    monkeypatch.setattr(runtime_module, "finished_stored_result", copied)

    view = pg_env.engine.start(_SPEC, {}, "agent")

    assert view.state is RunState.COMPLETED
    assert taken == [False] * 3
    versions = [result["capability_version"] for _, _, result in _stored_steps(pg_env, view.run.id)]
    assert versions == ["handed-not-foreseen"] * 3
    assert pg_env.ledger.verify().ok


def test_a_failed_step_never_stores_the_result_foreseen_for_it(
    pg_env: WfEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    foreseen: list[str] = []
    foresee = PostgresStepResultStore.foresee

    def noted(store: PostgresStepResultStore, principal: str, key: str, result: Any) -> None:
        foreseen.append(key)
        foresee(store, principal, key, result)

    monkeypatch.setattr(PostgresStepResultStore, "foresee", noted)
    taken = _count_taken(monkeypatch)
    spec = WorkflowBuilder("fails").step("s0", "ops.check", service="web", healthy=False).build()

    failed = pg_env.engine.start(spec, {}, "agent")
    view = pg_env.engine.start(_SPEC, {}, "agent")

    assert failed.state is not RunState.COMPLETED
    assert any(failed.run.id in key for key in foreseen)  # its "ok" result was foreseen...
    with pg_env.database.connection() as conn:
        row = conn.execute(
            "SELECT state, result, output FROM wf_steps WHERE run_id = %s", (failed.run.id,)
        ).fetchone()
    assert row is not None and row[0] != "completed"
    assert row[1] is None and row[2] is None  # ...and never stored
    assert view.state is RunState.COMPLETED
    assert taken == [True] * 3  # the failed step completed nothing; each later step its own
