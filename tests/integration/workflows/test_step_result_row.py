"""A SQLite step row keeps its result once, compactly, and replays it exactly.

The output lives in its own column; the ``result`` column keeps only what replaying
needs (``replay_fields``), and what it keeps agrees with the step's audit record.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from wf_env import WfEnv

from aifr.errors import ErrorCode, ExecutionError
from aifr.invocation import Result, Status
from aifr.policy import Decision, PolicyDecision
from aifr.storage.run_rows import encode_column, replay_fields
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.idempotency import SqliteIdempotencyStore
from aifr.storage.sqlite.runs import SqliteRunStore
from aifr.storage.sqlite.step_results import StepResultStore
from aifr.workflows import StepKey, WorkflowBuilder
from aifr.workflows.ports import RunState


def _comparable(result: Result) -> dict[str, Any]:
    """Every field of ``result``, the error by its payload (errors compare by identity)."""
    fields = result.to_dict()
    fields["error"] = result.error_payload
    return fields


@pytest.mark.parametrize(
    "result",
    [
        Result(Status.OK, "req-1", "files.write", "alice", output={"bytes": 3}),
        Result(
            Status.OK,
            "req-2",
            "ops.deploy",
            "alice",
            output=[1, None, {"a": ""}],
            decision=PolicyDecision(
                Decision.REQUIRE_APPROVAL,
                "deploy",
                "needs a human",
                approver_roles=("ops",),
                quorum=2,
                approval_ttl_s=30.0,
                grant_id="g-1",
                quorum_roles=(("ops", 2),),
            ),
            capability_version="2",
            fingerprint="f" * 64,
            trace_id="t" * 32,
            circuit="half_open",
            approval_id="ap-1",
        ),
        Result(
            Status.OK,
            "req-3",
            "x.y",
            "p",
            output=None,
            decision=PolicyDecision(Decision.ALLOW, None, ""),
        ),
        Result(
            Status.FAILED,
            "req-4",
            "x.y",
            "p",
            error=ExecutionError("boom", code=ErrorCode.EXECUTION_FAILED, capability_id="x.y"),
        ),
    ],
)
def test_replaying_the_kept_fields_gives_the_result_replaying_all_of_it_gives(
    result: Result,
) -> None:
    full = json.loads(json.dumps(result.to_dict()))
    kept = json.loads(encode_column(replay_fields(full)) or "null")
    kept["output"] = full["output"]  # the step row's own column

    assert "output" not in replay_fields(full)
    assert _comparable(Result.from_dict(kept, replayed=True)) == _comparable(
        Result.from_dict(full, replayed=True)
    )


def test_the_step_row_keeps_the_output_once_and_a_result_that_agrees_with_its_audit_record(
    sqlite_env: WfEnv,
) -> None:
    path = str(sqlite_env.root / "a.txt")
    spec = WorkflowBuilder("one-write").step("w", "files.write", path=path, content="hey").build()

    view = sqlite_env.engine.start(spec, {}, "agent")

    assert view.state is RunState.COMPLETED
    row = (
        sqlite_env.database.connect()  # type: ignore[union-attr]  # the SQLite env
        .execute(
            "SELECT output, result, audit_id FROM wf_steps WHERE run_id = ? AND step_id = 'w'",
            (view.run.id,),
        )
        .fetchone()
    )
    stored = json.loads(row["result"])
    assert "output" not in stored
    assert None not in stored.values()
    assert row["output"] == encode_column(view.step("w").output)
    audit = sqlite_env.ledger.get(row["audit_id"])
    assert audit is not None
    assert stored["request_id"] == audit.event.request_id
    assert stored["fingerprint"] == audit.event.capability_fingerprint
    assert stored["decision"]["rule_id"] == audit.event.rule_id
    assert stored["trace_id"] == audit.event.trace_id

    key = str(StepKey(view.run.id, "w", 1))
    database, runs = sqlite_env.database, sqlite_env.runs
    assert isinstance(database, SqliteDatabase)
    assert isinstance(runs, SqliteRunStore)
    store = StepResultStore(runs, SqliteIdempotencyStore(database, sqlite_env.ledger))
    replayed = store.get("agent", key)
    assert replayed is not None
    assert replayed.result is not None
    again = Result.from_dict(replayed.result, replayed=True)
    assert again.output == view.step("w").output
    assert again.status is Status.OK
    assert again.request_id == audit.event.request_id


@pytest.mark.pg
def test_a_postgres_step_row_keeps_the_same_compact_result_and_replays_it(pg_env: WfEnv) -> None:
    from aifr.storage.postgres.database import PostgresDatabase
    from aifr.storage.postgres.idempotency import PostgresIdempotencyStore
    from aifr.storage.postgres.runs import PostgresRunStore
    from aifr.storage.postgres.step_results import PostgresStepResultStore

    path = str(pg_env.root / "a.txt")
    spec = WorkflowBuilder("one-write").step("w", "files.write", path=path, content="hey").build()

    view = pg_env.engine.start(spec, {}, "agent")

    assert view.state is RunState.COMPLETED
    runs = pg_env.runs
    assert isinstance(runs, PostgresRunStore)
    with runs.database.connection() as conn:
        row = conn.execute(
            "SELECT output, result, audit_id FROM wf_steps WHERE run_id = %s AND step_id = 'w'",
            (view.run.id,),
        ).fetchone()
    assert row is not None
    stored = json.loads(row[1])
    assert "output" not in stored
    assert "ok" not in stored and "replayed" not in stored  # derived on replay
    assert None not in stored.values()
    assert None not in stored["decision"].values()
    assert row[0] == encode_column(view.step("w").output)
    audit = pg_env.ledger.get(row[2])
    assert audit is not None
    assert stored["request_id"] == audit.event.request_id

    database = pg_env.database
    assert isinstance(database, PostgresDatabase)
    store = PostgresStepResultStore(runs, PostgresIdempotencyStore(database, pg_env.ledger))
    replayed = store.get("agent", str(StepKey(view.run.id, "w", 1)))
    assert replayed is not None
    assert replayed.result is not None
    again = Result.from_dict(replayed.result, replayed=True)
    assert again.output == view.step("w").output
    assert again.status is Status.OK
    assert again.ok
    assert again.request_id == audit.event.request_id
    assert again.decision is not None
    assert again.decision.rule_id == audit.event.rule_id
