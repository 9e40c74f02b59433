"""PostgreSQL: a step's commit is confirmed after its rows, and before the next step acts.

Inside the engine's deferred commits a lone step's statement comes back with its rows
while the server flushes the commit, and the runtime settles that commit before the next
step's effect. These tests slow down or refuse a real commit on the server (a deferred
constraint trigger, which runs at commit time, after the rows were sent) and check what
a demanding user needs: the next effect sees the previous step committed, a refused
commit stops the run before anything else acts and loses nothing, and the run then
resumes from what is stored.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from wf_env import Effects, WfEnv, build_wf_env, file_capabilities

from aifr.capabilities import CallInfo, CapabilityRegistry, capability
from aifr.errors import ErrorCode, UnconfirmedCommitError
from aifr.storage.postgres.database import PostgresDatabase
from aifr.storage.postgres.prepared_call import PreparedCall
from aifr.storage.postgres.runs import PostgresRunStore
from aifr.workflows import RunState, WorkflowBuilder

pytestmark = pytest.mark.pg

SLOW_COMMIT_S = 0.4


@pytest.fixture
def looked() -> list[str | None]:
    """What ``test.look`` saw of step ``s0``'s row, once per call."""
    return []


@pytest.fixture
def env(tmp_path: Path, looked: list[str | None]) -> Iterator[WfEnv]:
    dsn = os.environ.get("AIFR_TEST_PG_DSN")
    if not dsn:
        pytest.skip("AIFR_TEST_PG_DSN is not set: the PostgreSQL adapter needs a server")
    schema = f"aifr_test_{uuid.uuid4().hex[:12]}"

    def committed(query: str, run_id: str | None) -> tuple[Any, ...] | None:
        """One row as committed, read on a connection of its own (not the worker's)."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            return conn.execute(query, (run_id,)).fetchone()

    @capability("test.look", operation="READ", risk="LOW")
    def look(info: CallInfo) -> dict[str, Any]:
        """The state step s0 has as committed."""
        row = committed(
            "SELECT state FROM wf_steps WHERE run_id = %s AND step_id = 's0'", info.run_id
        )
        looked.append(None if row is None else row[0])
        return {"seen": looked[-1]}

    @capability("test.peek", operation="READ", risk="LOW")
    def peek(info: CallInfo) -> dict[str, Any]:
        """The run's committed state and lease owner."""
        row = committed("SELECT state, lease_owner FROM wf_runs WHERE id = %s", info.run_id)
        looked.append(None if row is None else f"{row[0]} by {row[1]}")
        return {"seen": looked[-1]}

    @capability("test.clock", operation="READ", risk="LOW")
    def clock(info: CallInfo) -> dict[str, Any]:
        """The server's clock when this effect ran (seconds since the epoch, as text)."""
        row = committed(
            "SELECT extract(epoch FROM clock_timestamp())::text WHERE %s::text IS NOT NULL",
            info.run_id,
        )
        looked.append(None if row is None else row[0])
        return {"seen": looked[-1]}

    effects = Effects()
    registry = CapabilityRegistry([*file_capabilities(effects), look, peek, clock])
    built = build_wf_env(tmp_path, postgres=(dsn, schema), registry=registry)
    built.effects = effects
    yield built
    built.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _at_commit(env: WfEnv, table: str, when: str, body: str) -> None:
    """Run ``body`` (PL/pgSQL) when a transaction that updated a ``table`` row matching
    ``when`` commits (a deferred constraint trigger named ``at_commit``)."""
    assert isinstance(env.database, PostgresDatabase)
    with env.database.connection() as conn:
        conn.execute(
            "CREATE FUNCTION at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"{body}; RETURN NULL; END $$"
        )
        conn.execute(
            f"CREATE CONSTRAINT TRIGGER at_commit AFTER UPDATE ON {table} "
            f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN ({when}) "
            "EXECUTE FUNCTION at_commit()"
        )


def _at_commit_of_s0(env: WfEnv, body: str) -> None:
    """Run ``body`` when a transaction that completed step s0 commits."""
    _at_commit(env, "wf_steps", "NEW.step_id = 's0' AND NEW.state = 'completed'", body)


def _drop_trigger(env: WfEnv) -> None:
    assert isinstance(env.database, PostgresDatabase)
    with env.database.connection() as conn:
        conn.execute("DROP TRIGGER at_commit ON wf_steps")


def _spec(first: str = "ops.check") -> Any:
    builder = WorkflowBuilder("two")
    if first == "files.write":
        builder = builder.input("path", "string")
        builder = builder.step("s0", "files.write", path="{{ inputs.path }}", content="v1")
    else:
        builder = builder.step("s0", "ops.check", service="web")
    return builder.step("s1", "test.look").build()


def test_the_next_step_acts_only_once_the_previous_step_is_committed(
    env: WfEnv, looked: list[str | None]
) -> None:
    # s0's commit takes SLOW_COMMIT_S on the server after its rows went out: s1's effect
    # reads s0's row from another connection, and must find it completed.
    _warm(env)
    _at_commit_of_s0(env, f"PERFORM pg_sleep({SLOW_COMMIT_S})")
    looked.clear()

    view = env.engine.start(_spec(), {}, "agent")

    assert view.state is RunState.COMPLETED
    assert looked == ["completed"]
    assert env.ledger.verify().ok


def test_a_commit_refused_after_its_rows_stops_the_run_before_the_next_effect(
    env: WfEnv, looked: list[str | None], tmp_path: Path
) -> None:
    # The server runs s0's statement and sends its rows, then refuses the commit: s1
    # never acts, s0 is not recorded, nothing of the attempt is in the chain, and once
    # the database accepts commits again the run resumes and completes, s0's effect
    # still done once (its idempotency key).
    _warm(env)
    _at_commit_of_s0(env, "RAISE EXCEPTION 'the disk said no'")
    target = tmp_path / "out.txt"
    records_before = len(list(env.ledger.records()))
    env.effects.log.clear()
    looked.clear()

    with pytest.raises(UnconfirmedCommitError) as refused:
        env.engine.start(_spec("files.write"), {"path": str(target)}, "agent")

    assert refused.value.code is ErrorCode.STORAGE_COMMIT_UNCONFIRMED
    assert "the disk said no" in refused.value.message
    assert looked == []  # s1 never ran
    assert env.effects.log == [("write", str(target))]
    run_id = _only_unfinished(env)
    steps = {s.step_id: s.state.value for s in env.runs.steps(run_id)}
    assert steps["s0"] != "completed" and steps["s1"] == "pending", steps
    kinds = [r.event.kind for r in list(env.ledger.records())[records_before:]]
    assert "invocation" not in kinds, kinds  # s0's record went with its refused commit
    assert env.ledger.verify().ok

    _drop_trigger(env)
    resumed = env.engine.resume(run_id)

    assert resumed.state is RunState.COMPLETED
    assert env.effects.log == [("write", str(target))]  # not written twice
    assert looked == ["completed"]
    assert env.ledger.verify().ok


def test_a_run_driven_alone_settles_its_last_commit_before_returning(env: WfEnv) -> None:
    # The last step carries the run's end; its commit is confirmed before start() returns.
    _warm(env)
    _at_commit_of_s0(env, f"PERFORM pg_sleep({SLOW_COMMIT_S})")
    spec = WorkflowBuilder("one").step("s0", "ops.check", service="web").build()

    started = time.monotonic()
    view = env.engine.start(spec, {}, "agent")

    assert time.monotonic() - started >= SLOW_COMMIT_S
    assert view.state is RunState.COMPLETED
    assert env.ledger.verify().ok


def _at_commit_of_a_claim(env: WfEnv, body: str) -> None:
    """Run ``body`` when a transaction that started a queued run commits (its claim)."""
    _at_commit(env, "wf_runs", "OLD.state = 'pending' AND NEW.state = 'running'", body)


def _queue_one(env: WfEnv, first: str = "test.peek") -> str:
    builder = WorkflowBuilder("queued")
    if first == "files.write":
        builder = builder.input("path", "string")
        spec = builder.step("s0", "files.write", path="{{ inputs.path }}", content="v1").build()
        inputs = {"path": str(env.root / "claimed.txt")}
    else:
        spec, inputs = builder.step("s0", first).build(), {}
    queued = env.engine.start(spec, inputs, "agent", execute=False)
    assert queued.state is RunState.PENDING
    return queued.run.id


def test_a_claimed_run_acts_only_once_its_claim_is_committed(
    env: WfEnv, looked: list[str | None]
) -> None:
    # A worker's claim comes back with its rows while the server flushes its commit
    # (slowed here by SLOW_COMMIT_S): the run's first effect reads the run's row from
    # another connection and must find it running under this worker's lease.
    _warm(env)
    run_id = _queue_one(env)
    _at_commit_of_a_claim(env, f"PERFORM pg_sleep({SLOW_COMMIT_S})")
    looked.clear()

    started = time.monotonic()
    env.engine.recover(views=False)

    assert time.monotonic() - started >= SLOW_COMMIT_S
    assert looked == [f"running by {env.engine.owner}"]
    assert env.engine.view(run_id).state is RunState.COMPLETED
    assert env.ledger.verify().ok


def test_a_claim_refused_at_its_commit_acts_on_nothing_and_the_run_is_claimed_later(
    env: WfEnv, caplog: pytest.LogCaptureFixture
) -> None:
    # The server runs the claim and sends its rows, then refuses its commit: the run's
    # first step never acts, nothing of the run's start is in the chain, the worker stops
    # its turn (it does not claim the same run again and again), and once commits go
    # through again the run is claimed and completed with its effect done once.
    _warm(env)
    run_id = _queue_one(env, "files.write")
    _at_commit_of_a_claim(env, "RAISE EXCEPTION 'no room for a claim'")
    records_before = len(list(env.ledger.records()))
    env.effects.log.clear()

    env.engine.recover(views=False)

    assert env.effects.log == []
    run = env.runs.get(run_id)
    assert run is not None
    assert (run.state, run.lease_owner) == (RunState.PENDING, None)
    assert list(env.ledger.records())[records_before:] == []
    assert "no room for a claim" in caplog.text
    assert caplog.text.count("no room for a claim") == 1  # one refused claim, one turn
    assert env.ledger.verify().ok

    assert isinstance(env.database, PostgresDatabase)
    with env.database.connection() as conn:
        conn.execute("DROP TRIGGER at_commit ON wf_runs")
    env.engine.recover(views=False)

    assert env.engine.view(run_id).state is RunState.COMPLETED
    assert env.effects.log == [("write", str(env.root / "claimed.txt"))]
    assert env.ledger.verify().ok


def _note_claims_and_slow_ends(env: WfEnv) -> None:
    """Table ``seen``: each claim of a queued run and each run's end, with the time and
    the transaction that wrote it; each run's end takes SLOW_COMMIT_S to commit."""
    assert isinstance(env.database, PostgresDatabase)
    with env.database.connection() as conn:
        conn.execute(
            "CREATE TABLE seen (what text, run text, "
            "at double precision DEFAULT extract(epoch FROM clock_timestamp()), "
            "xid bigint DEFAULT txid_current())"
        )
        conn.execute(
            "CREATE FUNCTION note_claim() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO seen (what, run) VALUES ('claimed', NEW.id); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER note_claim BEFORE UPDATE ON wf_runs FOR EACH ROW "
            "WHEN (OLD.state = 'pending' AND NEW.state = 'running') "
            "EXECUTE FUNCTION note_claim()"
        )
    _at_commit(
        env,
        "wf_runs",
        "NEW.state = 'completed'",
        f"PERFORM pg_sleep({SLOW_COMMIT_S}); INSERT INTO seen (what, run) VALUES ('ended', NEW.id)",  # noqa: S608  # constants
    )


def _two_runs_drained(
    env: WfEnv, looked: list[str | None]
) -> tuple[str, str, dict[tuple[str, str], tuple[float, int]], list[float]]:
    """Two queued runs of one ``test.clock`` step, drained by one turn whose run ends
    commit slowly: their ids, what ``seen`` noted (time, transaction) and their effects'
    times."""
    _warm(env)
    first, second = _queue_one(env, "test.clock"), _queue_one(env, "test.clock")
    _note_claims_and_slow_ends(env)
    looked.clear()

    env.engine.recover(views=False)

    assert isinstance(env.database, PostgresDatabase)
    with env.database.connection() as conn:
        seen = {(what, run): (at, xid) for what, run, at, xid in conn.execute("SELECT * FROM seen")}
    effects = [float(at) for at in looked if at is not None]
    assert len(effects) == 2
    return first, second, seen, effects


def test_a_worker_claims_its_next_run_in_its_last_run_s_end_commit(
    env: WfEnv, looked: list[str | None]
) -> None:
    # Each run's end takes SLOW_COMMIT_S to commit on the server. The worker's claim of
    # the next run goes out with the end, in the same transaction (one commit, not a
    # second round trip after it); the next run's first effect waits for that commit.
    first, second, seen, effects = _two_runs_drained(env, looked)

    assert seen["claimed", second][1] == seen["ended", first][1]  # one transaction
    assert seen["claimed", first][1] != seen["ended", first][1]  # the turn's first: its own
    assert effects[1] > seen["ended", first][0]  # its first effect waited for that commit
    assert effects[0] > seen["claimed", first][0]
    assert {env.engine.view(run).state for run in (first, second)} == {RunState.COMPLETED}
    assert env.ledger.verify().ok


def test_a_run_ending_without_claims_ahead_has_the_next_claimed_beside_its_end(
    env: WfEnv, looked: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run that ends another way than with its last step's write (claims ahead off
    # here): the claim of the next run goes out while the end's commit flushes, on another
    # session, instead of after it; the next run's first effect still waits for both.
    monkeypatch.setattr(
        type(env.engine), "claiming_ahead", lambda self, states, wanted: nullcontext()
    )
    first, second, seen, effects = _two_runs_drained(env, looked)

    assert seen["claimed", second][1] != seen["ended", first][1]
    assert seen["claimed", second][0] < seen["ended", first][0]  # while the end committed
    assert effects[1] > seen["ended", first][0]  # but its first effect waited for that commit
    assert {env.engine.view(run).state for run in (first, second)} == {RunState.COMPLETED}
    assert env.ledger.verify().ok


def test_a_turn_claims_ahead_only_a_run_it_will_drive(env: WfEnv) -> None:
    # A turn limited to one run: that run's end claims nothing more, and the next run
    # stays queued, untouched, for the next turn.
    _warm(env)
    first, second = _queue_one(env, "test.clock"), _queue_one(env, "test.clock")

    env.engine.recovery.run_once(limit=1, views=False)

    assert env.engine.view(first).state is RunState.COMPLETED
    run = env.runs.get(second)
    assert run is not None
    assert (run.state, run.lease_owner) == (RunState.PENDING, None)


def test_a_run_claimed_ahead_but_not_driven_this_turn_is_given_back(
    env: WfEnv, looked: list[str | None]
) -> None:
    # The worker is told to stop during a run whose end then claims the next run: the
    # turn drives no other run, and that run's lease is given back at the turn's end;
    # the next turn claims and completes it, started once.
    _warm(env)
    first, second = _queue_one(env, "test.clock"), _queue_one(env, "test.clock")
    stopping = {"now": False}
    real_is_stopping = env.engine.is_stopping

    def stops_after_the_first_run() -> bool:
        return stopping["now"] or real_is_stopping()

    env.engine.is_stopping = stops_after_the_first_run  # type: ignore[method-assign]
    runs = env.runs
    assert isinstance(runs, PostgresRunStore)
    original_claimed_ahead = runs.claimed_ahead

    def claimed_then_stopped(rows: Any) -> None:
        original_claimed_ahead(rows)
        stopping["now"] = True  # after the claim went out with the first run's end

    runs.claimed_ahead = claimed_then_stopped  # type: ignore[method-assign]
    looked.clear()

    env.engine.recover(views=False)

    assert env.engine.view(first).state is RunState.COMPLETED
    run = env.runs.get(second)
    assert run is not None
    assert (run.state, run.lease_owner) == (RunState.RUNNING, None)
    assert len(looked) == 1  # the second run never acted

    stopping["now"] = False
    env.engine.recover(views=False)

    assert env.engine.view(second).state is RunState.COMPLETED
    kinds = [r.event.kind for r in env.ledger.records() if r.event.run_id == second]
    assert kinds.count("workflow.started") == 1
    assert env.ledger.verify().ok


def test_a_run_end_refused_at_its_commit_takes_its_claim_of_the_next_run_with_it(
    env: WfEnv, caplog: pytest.LogCaptureFixture
) -> None:
    # The end of the first run and the claim of the second share a transaction: when
    # the server refuses that commit, neither happened. The second run stays queued and
    # free, its start is not in the chain, and once commits go through both complete.
    _warm(env)
    first, second = _queue_one(env, "test.clock"), _queue_one(env, "test.clock")
    _at_commit(env, "wf_runs", "NEW.state = 'completed'", "RAISE EXCEPTION 'no room for an end'")

    env.engine.recover(views=False)

    assert "no room for an end" in caplog.text
    ended = env.runs.get(first)
    assert ended is not None and ended.state is RunState.RUNNING
    queued = env.runs.get(second)
    assert queued is not None
    assert (queued.state, queued.lease_owner) == (RunState.PENDING, None)
    kinds = [r.event.kind for r in env.ledger.records() if r.event.run_id == second]
    assert "workflow.started" not in kinds, kinds  # its start went with the refused commit
    assert env.ledger.verify().ok

    assert isinstance(env.database, PostgresDatabase)
    with env.database.connection() as conn:
        conn.execute("DROP TRIGGER at_commit ON wf_runs")
    env.engine.recover(views=False)
    env.engine.recover(views=False)

    assert {env.engine.view(run).state for run in (first, second)} == {RunState.COMPLETED}
    assert env.ledger.verify().ok


def _warm(env: WfEnv) -> None:
    """One run first: statements prepared, the pool's connections open."""
    assert env.engine.start(_spec(), {}, "agent").state is RunState.COMPLETED


def _only_unfinished(env: WfEnv) -> str:
    everything = env.runs.unfinished(frozenset(RunState), 10)
    unfinished = [run for run in everything if run.state is not RunState.COMPLETED]
    assert len(unfinished) == 1, unfinished
    return unfinished[0].id


@pytest.fixture
def conn() -> Iterator[psycopg.Connection[Any]]:
    dsn = os.environ.get("AIFR_TEST_PG_DSN")
    if not dsn:
        pytest.skip("AIFR_TEST_PG_DSN is not set: the PostgreSQL adapter needs a server")
    schema = f"aifr_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute("CREATE TABLE t (id integer PRIMARY KEY, v text)")
        conn.execute(
            "CREATE FUNCTION at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.v = 'refuse' THEN RAISE EXCEPTION 'refused at commit'; END IF; "
            f"PERFORM pg_sleep({SLOW_COMMIT_S}); RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON t DEFERRABLE INITIALLY "
            "DEFERRED FOR EACH ROW EXECUTE FUNCTION at_commit()"
        )
        yield conn
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


INSERT = PreparedCall("insert_t", "INSERT INTO t VALUES ($1::integer, $2) RETURNING id, v")
INSERT_ALSO = PreparedCall(
    "insert_also", "INSERT INTO t VALUES ($1::integer, 'also') RETURNING id, v"
)


def test_rows_come_back_before_the_commit_and_the_confirmation_waits_for_it(
    conn: psycopg.Connection[Any],
) -> None:
    started = time.monotonic()
    rows, confirm = INSERT.rows_before_commit(conn, ["1", "x"])
    rows_after = time.monotonic() - started
    confirm()
    confirmed_after = time.monotonic() - started

    assert rows == [("1", "x")]
    assert rows_after < SLOW_COMMIT_S <= confirmed_after
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)  # usable again


def test_a_refused_commit_raises_at_its_confirmation_and_writes_nothing(
    conn: psycopg.Connection[Any],
) -> None:
    rows, confirm = INSERT.rows_before_commit(conn, ["2", "refuse"])

    assert rows == [("2", "refuse")]
    with pytest.raises(psycopg.errors.RaiseException, match="refused at commit"):
        confirm()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_failed_statement_raises_at_once_and_leaves_the_connection_usable(
    conn: psycopg.Connection[Any],
) -> None:
    INSERT.rows_before_commit(conn, ["3", "x"])[1]()

    with pytest.raises(psycopg.errors.UniqueViolation):
        INSERT.rows_before_commit(conn, ["3", "again"])

    assert INSERT.rows(conn, ["4", "y"]) == [("4", "y")]
    conn.execute("DEALLOCATE insert_t")  # prepared again when the session lost it
    rows, confirm = INSERT.rows_before_commit(conn, ["5", "z"])
    confirm()
    assert rows == [("5", "z")]


def test_a_pair_comes_back_before_its_one_commit_which_the_confirmation_waits_for(
    conn: psycopg.Connection[Any],
) -> None:
    started = time.monotonic()
    rows, later, confirm = INSERT.pair_before_commit(conn, ["10", "x"], INSERT_ALSO, ["11"])
    then_rows = later.rows()
    rows_after = time.monotonic() - started
    confirm()

    assert (rows, then_rows) == ([("10", "x")], [("11", "also")])
    assert rows_after < SLOW_COMMIT_S <= time.monotonic() - started
    xids = conn.execute("SELECT DISTINCT xmin::text FROM t WHERE id IN (10, 11)").fetchall()
    assert len(xids) == 1  # one transaction


def test_the_second_of_a_pair_is_read_by_the_confirmation_when_nobody_asked(
    conn: psycopg.Connection[Any],
) -> None:
    _, later, confirm = INSERT.pair_before_commit(conn, ["20", "x"], INSERT_ALSO, ["21"])
    confirm()

    assert later.rows() == [("21", "also")]  # kept for whoever asks later
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)


@pytest.mark.parametrize("read_first", [True, False])
def test_a_pair_whose_second_statement_fails_commits_neither(
    conn: psycopg.Connection[Any], read_first: bool
) -> None:
    INSERT.rows_before_commit(conn, ["12", "x"])[1]()

    rows, later, confirm = INSERT.pair_before_commit(conn, ["13", "x"], INSERT_ALSO, ["12"])

    assert rows == [("13", "x")]  # back before the second ran
    if read_first:
        with pytest.raises(psycopg.errors.UniqueViolation):
            later.rows()
    with pytest.raises(psycopg.errors.UniqueViolation):
        confirm()
    assert conn.execute("SELECT id FROM t ORDER BY id").fetchall() == [(12,)]


def test_a_pair_whose_first_statement_fails_never_runs_the_second(
    conn: psycopg.Connection[Any],
) -> None:
    INSERT.rows_before_commit(conn, ["14", "x"])[1]()

    with pytest.raises(psycopg.errors.UniqueViolation):
        INSERT.pair_before_commit(conn, ["14", "again"], INSERT_ALSO, ["15"])

    assert conn.execute("SELECT id FROM t ORDER BY id").fetchall() == [(14,)]


def test_a_pair_refused_at_its_commit_writes_neither(conn: psycopg.Connection[Any]) -> None:
    rows, later, confirm = INSERT_ALSO.pair_before_commit(conn, ["18"], INSERT, ["19", "refuse"])

    assert (rows, later.rows()) == ([("18", "also")], [("19", "refuse")])
    with pytest.raises(psycopg.errors.RaiseException, match="refused at commit"):
        confirm()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_session_that_lost_one_statement_has_every_one_prepared_again(
    conn: psycopg.Connection[Any],
) -> None:
    # A session's statements go together (psycopg's DEALLOCATE ALL): once one call finds
    # its statement gone, the second of a pair is prepared again before it is sent, not
    # found missing after the first's rows were already handed out.
    INSERT.pair_before_commit(conn, ["30", "x"], INSERT_ALSO, ["31"])[2]()
    conn.execute("DEALLOCATE ALL")
    INSERT.rows_before_commit(conn, ["32", "x"])[1]()  # finds its own gone

    rows, later, confirm = INSERT.pair_before_commit(conn, ["33", "y"], INSERT_ALSO, ["34"])
    confirm()

    assert (rows, later.rows()) == ([("33", "y")], [("34", "also")])
    conn.execute("DEALLOCATE ALL")
    rows, later, confirm = INSERT.pair_before_commit(conn, ["35", "z"], INSERT_ALSO, ["36"])
    confirm()  # the first found missing: both prepared again, the pair sent again
    assert (rows, later.rows()) == ([("35", "z")], [("36", "also")])


@pytest.fixture
def database(conn: psycopg.Connection[Any]) -> Iterator[PostgresDatabase]:
    """A pool of 3 on ``conn``'s schema (its table ``t`` commits slowly or refuses).

    Room for one deferring thread's two connections and one to spare.
    """
    dsn = os.environ["AIFR_TEST_PG_DSN"]
    schema = conn.execute("SELECT current_schema()").fetchone()
    assert schema is not None
    pool = PostgresDatabase(dsn, schema=schema[0], max_size=3)
    yield pool
    pool.close()


def _all_back_in_the_pool(database: PostgresDatabase) -> None:
    """Every connection of the fixture's pool (3) can be taken at once: none is kept."""
    every = [database.pool().getconn(timeout=10) for _ in range(3)]
    for conn in every:
        database.pool().putconn(conn)


def _insert_held(database: PostgresDatabase, key: int, value: str) -> None:
    with database.connection() as held:
        rows, confirm = INSERT.rows_before_commit(held, [str(key), value])
        database.hold(held, confirm, f"inserting {key}")
    assert rows == [(str(key), value)]


def test_a_deferring_thread_settles_before_it_uses_the_database_again(
    database: PostgresDatabase,
) -> None:
    with database.deferring():
        assert database.is_deferring()
        _insert_held(database, 1, "x")
        assert not database.is_deferring()  # one commit at a time is left unconfirmed
        with database.connection() as conn:  # settles first: the insert is committed
            assert conn.execute("SELECT v FROM t WHERE id = 1").fetchone() == ("x",)
        _insert_held(database, 2, "y")
    assert not database.is_deferring()
    with database.connection() as conn:  # the block's end confirmed the last one
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_a_deferring_thread_keeps_its_idle_connection_and_the_pool_gets_it_back_at_the_end(
    database: PostgresDatabase,
) -> None:
    pool = database.pool()
    both = [pool.getconn(timeout=10), pool.getconn(timeout=10)]
    for conn in both:  # two idle connections, which the pool lends in turn
        pool.putconn(conn)
    with database.connection() as one, database.connection() as other:
        assert one is not other
    with database.deferring():
        with database.connection() as kept:
            pass
        with database.deferring():  # a block inside the drive's keeps it too
            with database.connection() as again:
                assert again is kept  # not a checkout from the pool
            _insert_held(database, 1, "x")
        with database.connection() as after_settle:  # confirmed, then kept again
            assert after_settle is kept
            assert after_settle.execute("SELECT v FROM t WHERE id = 1").fetchone() == ("x",)
            after_settle.execute("BEGIN")  # left inside a transaction: not kept
        with database.connection() as fresh:
            assert fresh.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert fresh.execute("SELECT count(*) FROM t").fetchone() == (1,)
            fresh.close()  # closed: not kept either; the pool replaces it
        with database.connection() as replaced:
            assert not replaced.closed
            assert replaced is not fresh
    _all_back_in_the_pool(database)


def _insert_beside(database: PostgresDatabase, key: int, value: str) -> psycopg.Connection[Any]:
    """Insert beside the thread's unconfirmed commit; the session it went out on."""
    with database.connection(beside=True) as beside:
        rows = INSERT.rows_deferred(
            database, beside, [str(key), value], f"inserting {key}", beside=True
        )
    assert rows == [(str(key), value)]
    return beside


def test_a_write_beside_an_unconfirmed_commit_does_not_wait_for_it(
    database: PostgresDatabase,
) -> None:
    # Each insert's commit takes SLOW_COMMIT_S on the server: the second goes out on
    # another session while the first flushes, so the two take about one wait, not two.
    with database.deferring():
        started = time.monotonic()
        _insert_held(database, 1, "x")
        assert database.may_hold(beside=True) and not database.may_hold()
        beside = _insert_beside(database, 2, "y")
        assert time.monotonic() - started < SLOW_COMMIT_S  # its rows came back at once
        assert not database.may_hold(beside=True)  # one beside another, no more
        with database.connection(beside=True) as conn:  # so this one settles both first
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)
            assert conn is beside  # the newest session is the one the thread keeps
        assert time.monotonic() - started < 1.75 * SLOW_COMMIT_S  # one after the other: 2x
    _all_back_in_the_pool(database)


def test_a_refused_commit_with_one_beside_it_is_raised_once_both_are_read(
    database: PostgresDatabase,
) -> None:
    with pytest.raises(UnconfirmedCommitError, match="inserting 1 was not confirmed"):
        with database.deferring():
            _insert_held(database, 1, "refuse")
            _insert_beside(database, 2, "y")
            database.settle()
    with database.connection() as conn:  # the one beside it committed, on its own
        assert conn.execute("SELECT id FROM t").fetchall() == [(2,)]
    _all_back_in_the_pool(database)


def test_threads_keep_a_session_and_write_beside_only_while_the_pool_has_room(
    database: PostgresDatabase,
) -> None:
    # A pool of 3, one connection to spare: one deferring thread may hold two (a write
    # beside its unconfirmed commit), two may keep one each, three may not even keep one.
    # Holding more would leave a thread waiting for a connection that only a waiting
    # thread could give back.
    seen: dict[int, tuple[bool, bool]] = {}

    def defer(threads: int, n: int, barrier: threading.Barrier) -> None:
        with database.deferring():
            barrier.wait()  # every thread inside its block at once
            with database.connection():
                pass
            kept = database._unsettled.kept is not None  # this thread's own state
            _insert_held(database, 100 * threads + n, "x")
            seen[n] = (kept, database.may_hold(beside=True))
            barrier.wait()  # none leaves before all have looked

    for threads, expected in ((1, (True, True)), (2, (True, False)), (3, (False, False))):
        seen.clear()
        barrier = threading.Barrier(threads, timeout=30)
        workers = [
            threading.Thread(target=defer, args=(threads, n, barrier)) for n in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert seen == dict.fromkeys(range(threads), expected), threads
    with database.connection() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (6,)


def test_after_an_unconfirmed_commit_a_deferring_thread_writes_nothing_more(
    database: PostgresDatabase,
) -> None:
    with pytest.raises(UnconfirmedCommitError, match="inserting 1 was not confirmed"):
        with database.deferring():
            _insert_held(database, 1, "refuse")
            for _ in range(2):  # refused at the first use, and at each one after it
                with pytest.raises(UnconfirmedCommitError), database.connection() as conn:
                    conn.execute("INSERT INTO t VALUES (9, 'after')")
            database.settle()
    with database.connection() as conn:  # after the block the database serves again
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_with_overlap_off_each_step_waits_for_its_commit(
    env: WfEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # workflows.overlap_commits = false: the engine drives runs outside the deferral,
    # so a step's write returns only once its commit is confirmed.
    _warm(env)
    engine = env.new_engine(overlap_commits=False)
    assert not engine.overlap_commits and env.engine.overlap_commits
    _at_commit_of_s0(env, f"PERFORM pg_sleep({SLOW_COMMIT_S})")
    store = env.runtime._idempotency.store  # type: ignore[union-attr]  # the step results
    took: list[float] = []
    complete = store.complete

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return complete(*args, **kwargs)
        finally:
            took.append(time.monotonic() - started)

    monkeypatch.setattr(store, "complete", timed)

    view = engine.start(_spec(), {}, "agent")

    assert view.state is RunState.COMPLETED
    assert took[0] >= SLOW_COMMIT_S  # s0's write waited out its slow commit itself
    assert env.ledger.verify().ok


@pytest.fixture
def pg_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project whose database_url is a schema of its own on the test server."""
    from aifr.config.project import init_project

    dsn = os.environ.get("AIFR_TEST_PG_DSN")
    if not dsn:
        pytest.skip("AIFR_TEST_PG_DSN is not set: the PostgreSQL adapter needs a server")
    schema = f"aifr_test_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("AIFR_DATABASE_URL", f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}")
    init_project(tmp_path)
    yield tmp_path
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _with_setting(project: Path, value: str) -> None:
    config = project / "aifr.toml"
    config.write_text(config.read_text() + f"\n[workflows]\noverlap_commits = {value}\n")


@pytest.mark.parametrize(("value", "overlap"), [("true", True), ("false", False)])
def test_the_project_setting_turns_the_overlap_on_or_off(
    pg_project: Path, value: str, overlap: bool
) -> None:
    from aifr.app import build_app

    _with_setting(pg_project, value)
    app = build_app(pg_project)
    try:
        assert app.workflows.overlap_commits is overlap
        assert app.new_engine().overlap_commits is overlap
    finally:
        app.close()


def test_auto_overlaps_only_while_this_host_s_workers_and_the_local_server_fit_its_cores(
    pg_project: Path,
) -> None:
    # The default, "auto": the test server is on this host (127.0.0.1), so the engines
    # overlap while this host's live workers and the server fit its cores, and stop once
    # the registry shows more workers here than that (read again within a second).
    from aifr.app import build_app
    from aifr.workflows.overlap import CommitOverlap
    from aifr.workflows.presence import worker_info

    cpus = os.cpu_count() or 1
    (pg_project / "policies" / "default.yaml").write_text(
        "version: 1\nrules:\n  - id: data\n    when: {capability: 'data.*'}\n    decision: ALLOW\n"
    )
    app = build_app(pg_project)
    try:
        assert isinstance(app.commit_overlap, CommitOverlap)
        crowd = [worker_info(f"{n}", 1, "test") for n in range(cpus)]
        for n, worker in enumerate(crowd):  # as many workers as cores, all on this host
            app.workers.announce(replace(worker, id=f"{worker.host}:{90000 + n}:x", pid=90000 + n))
        engine = app.new_engine()

        assert not engine.overlap_commits  # read now: the first question reads the registry
        for n, worker in enumerate(crowd):
            app.workers.leave(f"{worker.host}:{90000 + n}:x")
        time.sleep(1.1)  # the policy reads the registry at most once a second
        assert engine.overlap_commits is (cpus >= 2)  # alone: one worker and the server
        assert app.workflows.overlap_commits is engine.overlap_commits  # one policy for all
        spec = WorkflowBuilder("parse").step("s0", "data.json.parse", text="[1]").build()
        view = engine.start(spec, {}, "agent")  # and runs go through it either way
        assert view.state is RunState.COMPLETED, view.run.error
    finally:
        app.close()


def test_a_statement_with_no_rows_to_give_is_refused_and_the_connection_stays_usable(
    conn: psycopg.Connection[Any],
) -> None:
    # An empty statement answers EMPTY_QUERY: not rows, not an error. It is refused by
    # name, its pipeline is read to its end, and the connection serves again.
    empty = PreparedCall("empty_t", "")

    with pytest.raises(psycopg.OperationalError, match="EMPTY_QUERY"):
        empty.rows_before_commit(conn, [])

    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
