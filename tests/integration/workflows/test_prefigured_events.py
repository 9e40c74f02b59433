"""PostgreSQL: a step's ``ok`` record, encoded before its effect, is the record built after it.

Where a step's commit may still be flushing while the next step is checked, the runtime
builds and encodes that step's ``ok`` event then, and after the effect fills in the
duration (``aifr.audit.prefigure``). These tests run real workflows on a real server and
check that the records the templates gave are the records built afresh give: the chain
verifies, and each record's details are those of the same run with templates off.
"""

from __future__ import annotations

from typing import Any

import pytest
from wf_env import WfEnv

from aifr.audit import ledger as ledger_module
from aifr.invocation import CallOptions
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
