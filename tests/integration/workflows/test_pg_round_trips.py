"""PostgreSQL: what one workflow step costs the database, counted, so a regression fails.

A lone writer's step is one statement in autocommit (``aifr_step_recorded``: the fenced step
update, the audit chain's lock, head read and insert, the step row's ``audit_id``, all on
the server) and so one round trip. This test drives real runs of 2 and
12 steps through the engine on a real PostgreSQL schema and counts, per extra step, the
times the client waited for the server's answer and the statements it sent, so the
per-run work (claiming, loading, finishing) cancels out.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Generator
from typing import Any

import psycopg
import pytest
from psycopg.waiting import Wait
from wf_env import WfEnv

from aifr.audit import AuditEvent
from aifr.errors import StorageError
from aifr.storage.postgres.prepared_call import PreparedCall
from aifr.workflows import RunState, WorkflowBuilder

pytestmark = pytest.mark.pg

SHORT, LONG = 2, 12
TRIES = 5
"""Runs counted per length; the least count is kept. A pipelined transaction of the run's
own (its creation, its end) is read back in one or more pieces depending on timing, so
one run can count a wait more than the work needs; noise only ever adds."""


class Counter:
    """Counts answers waited for (runs of ``Wait.R`` yields) and statements sent, while on.

    Only the driving thread's are counted: the engine's lease heartbeat runs on its own
    thread and renews more often the longer a run takes, so on a loaded host it would add
    waits that depend on the host's speed, not on what a step sends.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.on = False
        self.thread = threading.get_ident()
        self.waits = 0
        self.statements: collections.Counter[str] = collections.Counter()
        wait, execute, executemany = (
            psycopg.Connection.wait,
            psycopg.Cursor.execute,
            psycopg.Cursor.executemany,
        )

        def counted(gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
            # An answer that arrives in pieces (a loaded host, a large result) makes the
            # generator wait to read again without sending anything in between: still
            # one round trip. Only a read wait that follows something else counts.
            previous = None
            try:
                state = next(gen)
                while True:
                    if state == Wait.R and previous != Wait.R:
                        self.waits += 1
                    previous = state
                    state = gen.send((yield state))
            except StopIteration as stop:
                return stop.value

        def counting(gen: Any) -> Any:
            return counted(gen) if self.on and threading.get_ident() == self.thread else gen

        def counting_wait(conn: Any, gen: Any, *args: Any, **kwargs: Any) -> Any:
            return wait(conn, counting(gen), *args, **kwargs)

        def note(method: Callable[..., Any]) -> Callable[..., Any]:
            def noted(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
                if self.on and threading.get_ident() == self.thread:
                    text = query if isinstance(query, str) else query.as_string(cursor)
                    self.statements[" ".join(text.split()[:3])] += 1
                return method(cursor, query, *args, **kwargs)

            return noted

        self._count_prepared_calls(monkeypatch)
        monkeypatch.setattr(psycopg.Connection, "wait", counting_wait)
        monkeypatch.setattr(psycopg.Cursor, "execute", note(execute))
        monkeypatch.setattr(psycopg.Cursor, "executemany", note(executemany))

    def _count_prepared_calls(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The step's statement goes through libpq directly: one send, one answer."""
        exchange, rows_first = PreparedCall._exchange, PreparedCall._rows_first

        def counting_exchange(conn: Any, send: Any) -> Any:
            self._count_one("PreparedCall")
            return exchange(conn, send)

        def counting_rows_first(
            call: PreparedCall, conn: Any, values: Any, then: Any = None
        ) -> Any:
            # Inside the engine's deferred commits: the answer is the rows; the commit's
            # confirmation is read later, with nothing sent. Counted by statement name; a
            # statement sent after it in the same pipeline (``then``) adds no wait.
            self._count_one(call.name.decode())
            if then is not None and self.on and threading.get_ident() == self.thread:
                self.statements[then[0].decode()] += 1
            return rows_first(call, conn, values, then)

        monkeypatch.setattr(PreparedCall, "_exchange", staticmethod(counting_exchange))
        monkeypatch.setattr(PreparedCall, "_rows_first", counting_rows_first)

    def _count_one(self, statement: str) -> None:
        if self.on and threading.get_ident() == self.thread:
            self.waits += 1
            self.statements[statement] += 1

    def run(self, env: WfEnv, steps: int) -> tuple[int, int]:
        builder = WorkflowBuilder(f"checks-{steps}")
        for n in range(steps):
            builder = builder.step(f"s{n}", "ops.check", service="web")
        spec = builder.build()
        env.engine.start(spec, {}, "agent")  # warm: statements prepared, pool filled
        counts = []
        for _ in range(TRIES):
            self.waits, self.statements = 0, collections.Counter()
            self.on = True
            try:
                view = env.engine.start(spec, {}, "agent")
            finally:
                self.on = False
            assert view.state is RunState.COMPLETED
            counts.append((self.waits, sum(self.statements.values())))
        return min(w for w, _ in counts), min(n for _, n in counts)


def test_a_step_costs_one_round_trip_and_one_statement(
    pg_env: WfEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = Counter(monkeypatch)
    short_waits, short_statements = counter.run(pg_env, SHORT)
    long_waits, long_statements = counter.run(pg_env, LONG)
    per_step = (long_waits - short_waits) / (LONG - SHORT)
    statements = (long_statements - short_statements) / (LONG - SHORT)
    # aifr_step_recorded: one statement and one answer waited for (two waits and seven
    # statements before the step's transaction moved into a server function). The count
    # is 1.0 on a quiet host; on a loaded one the run's own pipelined transactions (its
    # creation, its end) are now and then read back in more pieces, in every try at once,
    # which adds up to a few waits per run. A step that went back to two round trips
    # would count 2.0, so the bound sits between the two.
    assert 0.9 <= per_step <= 1.5, f"{per_step} round trips per step"
    assert statements == 1.0, f"{statements} statements per step: {counter.statements}"
    assert pg_env.ledger.verify().ok


def test_a_database_error_in_a_pipelined_write_rolls_it_back_and_the_next_write_works(
    pg_env: WfEnv,
) -> None:
    spec = WorkflowBuilder("one").step("s0", "ops.check", service="web").build()
    first = pg_env.engine.start(spec, {}, "agent")
    runs = pg_env.runs
    before = len(list(pg_env.ledger.records()))
    again = first.run.evolve(lease_owner=None)
    with pytest.raises(StorageError):  # the run's id exists: the insert fails in the pipeline
        runs.create(again, [], AuditEvent(kind="duplicate", principal="agent"))
    assert len(list(pg_env.ledger.records())) == before  # its audit record was not appended
    assert pg_env.engine.start(spec, {}, "agent").state is RunState.COMPLETED
    assert pg_env.ledger.verify().ok


def test_a_claimed_run_is_loaded_with_its_claim_and_not_asked_about_cancelling(
    pg_env: WfEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker's claim reads the run's steps in the same statement, and the claimed row
    # says whether anyone asked to cancel it: neither is asked again before the first step.
    spec = WorkflowBuilder("queued").step("s0", "ops.check", service="web").build()
    queued = pg_env.engine.start(spec, {}, "agent", execute=False)
    assert queued.state is RunState.PENDING
    assert [s.step_id for s in queued.steps] == ["s0"]
    counter = Counter(monkeypatch)
    counter.on = True
    try:
        pg_env.engine.recover(views=False)
    finally:
        counter.on = False
    assert pg_env.engine.view(queued.run.id).state is RunState.COMPLETED
    sent = counter.statements
    claims = sum(n for name, n in sent.items() if name.startswith("aifr_claim_"))
    assert claims == 2, sent  # the run's claim, then the claim that finds none
    assert not any(text.startswith(("SELECT run_id,", "SELECT cancel_requested")) for text in sent)
    assert pg_env.ledger.verify().ok


def test_a_claimed_run_that_was_cancelled_while_queued_is_cancelled(pg_env: WfEnv) -> None:
    spec = WorkflowBuilder("queued").step("s0", "ops.check", service="web").build()
    queued = pg_env.engine.start(spec, {}, "agent", execute=False)
    pg_env.runs.request_cancel(queued.run.id)
    pg_env.engine.recover(views=False)
    assert pg_env.engine.view(queued.run.id).state is RunState.CANCELLED


def test_a_queued_run_costs_its_claim_and_one_wait_to_end(
    pg_env: WfEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The claim starts the run (its `started` record appended in the claim's statement,
    # where it was a statement of its own after it), and the step that ends the run is
    # one statement (aifr_step_ends_run; it was a transaction waiting three times, around
    # a savepoint): 9 waits here before, then 5.
    spec = WorkflowBuilder("queued").step("s0", "ops.check", service="web").build()
    pg_env.engine.start(spec, {}, "agent")  # warm: statements prepared, pool filled
    counter = Counter(monkeypatch)
    waits = []
    for _ in range(TRIES):
        pg_env.engine.start(spec, {}, "agent", execute=False)
        counter.waits = 0
        counter.on = True
        try:
            pg_env.engine.recover(views=False)
        finally:
            counter.on = False
        waits.append(counter.waits)
    # counted: the claim, the step that ends the run (with it, in the same pipeline and
    # commit, the claim of the next run, which finds nothing) and the scan for other
    # unfinished runs
    assert min(waits) <= 3, waits
    assert pg_env.ledger.verify().ok
