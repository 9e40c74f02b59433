"""Workflow runs, steps, leases and the notification outbox in PostgreSQL.

:class:`PostgresRunStore` implements the engine's ``RunStore`` and
``NotificationOutbox`` ports with the same tables and columns as the SQLite store
(JSON values as text). A transaction writes its rows first and appends its audit
records last (:meth:`PostgresGroupCommit.audit_later`): the audit chain's lock is
taken once, at the end, by the server function that appends them, and held until the
commit, so all writers take their locks in one order (rows, then the chain) and the
chain's holder never waits for a row.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from aifr.audit import AuditEvent, AuditLedger, AuditRecord
from aifr.audit.ledger import PreparedEvent
from aifr.errors import AifrError, AuditError, ErrorCode, WorkflowError
from aifr.frozen import fast_init
from aifr.storage.postgres.audit import (
    CHAIN_HEAD_SQL,
    append_fields,
    append_record_sql,
    appended_records,
)
from aifr.storage.postgres.database import (
    PostgresDatabase,
    import_psycopg,
    translate_pg_errors,
)
from aifr.storage.postgres.groupcommit import (
    OneStatement,
    PendingAudit,
    PostgresGroupCommit,
)
from aifr.storage.postgres.prepared_call import LaterRows, PreparedCall
from aifr.storage.run_rows import (
    CLAIMABLE_INDEX,
    RUN_COLUMNS,
    STEP_COLUMNS,
    encode_column,
    prunable_where,
    run_from_row,
    run_params,
    states_in,
    step_from_values,
    step_params,
)
from aifr.storage.sqlite.database import Migration
from aifr.storage.worker_rows import workers_table
from aifr.workflows.ports import (
    ACTIVE_STATES,
    Completion,
    Notification,
    OutboxItem,
    PruneAudit,
    RunFinish,
    RunRecord,
    RunState,
    StepKey,
    StepRecord,
)
from aifr.workflows.spec import WorkflowSpec
from aifr.workflows.state import queued_steps

if TYPE_CHECKING:
    import psycopg

__all__ = ["PG_WORKFLOW_MIGRATIONS", "WAKE_CHANNEL", "PostgresRunStore", "run_change_text"]

logger = logging.getLogger(__name__)

WAKE_CHANNEL = "aifr_runs"
"""The ``LISTEN``/``NOTIFY`` channel on which a run that a worker could take is announced."""

_RELEASE = (
    "WITH released AS (UPDATE wf_runs SET lease_owner = NULL, "  # noqa: S608  # enum literals
    "lease_expires_at = NULL WHERE id = %s AND lease_owner = %s RETURNING id, state) "
    f"SELECT pg_notify(%s, id) FROM released WHERE {states_in(ACTIVE_STATES)}"
)
"""Give a lease back and, for a run still to be driven, announce it (sent on commit)."""

T = TypeVar("T")

OLDEST_FREE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION aifr_oldest_free_run(p_states text[], p_now double precision)
RETURNS TABLE (o_id text, o_start text[], o_pending boolean)
LANGUAGE plpgsql ROWS 1
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
AS $$ BEGIN
    RETURN QUERY SELECT id, start_audit, state = 'pending' FROM wf_runs
    WHERE {states_in(ACTIVE_STATES)} AND state = ANY(p_states)
        AND (lease_owner IS NULL OR lease_expires_at < p_now)
    ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED; END
$$
"""  # noqa: S608  # enum literals
"""The work queue's oldest free run in ``p_states``, locked: a claim's pick.

Walks ``wf_runs_claimable`` in order (its own ``WHERE`` is the index's, so the index
applies; ``p_states`` narrows it) and stops at the first run it can lock. The planner
settings are the function's own, for this one query: with statistics taken while the
table was empty or the queue nearly so (a new deployment; a burst queued after a quiet
spell), the planner costed a queue of hundreds as a row or two and chose the state
index, a bitmap of the whole queue or a scan of the table, and a sort, reading every
queued run each claim (a whole claim at 300 queued runs: 0.95 ms of the server's time,
against 0.60 ms with this walk, itself 0.02 ms). With sequential scans, bitmaps and
sorts off, the ordered walk is the one plan left that is not penalized, whatever the
statistics. Where the planner chose the walk anyway (it scales its estimates with the
table's size: 3,000 queued runs and more), the call costs about 0.03 ms more.
"""


def _claim_function() -> str:
    """:data:`CLAIM_FUNCTION`'s text, its result columns named after the tables' own."""
    run_out = [f"c_{column} wf_runs.{column}%TYPE" for column in RUN_COLUMNS.split(", ")]
    step_out = [f"s_{column} wf_steps.{column}%TYPE" for column in STEP_COLUMNS.split(", ")]
    outs = ",\n    ".join(
        [*run_out, "c_lease_epoch wf_runs.lease_epoch%TYPE", "c_started bigint", *step_out]
    )
    into = ", ".join(f"c_{column}" for column in RUN_COLUMNS.split(", "))
    first_only = ", ".join(
        f"CASE WHEN s.n = 1 THEN c_{column} END" for column in RUN_COLUMNS.split(", ")
    )
    steps = ", ".join(f"w.{column}" for column in STEP_COLUMNS.split(", "))
    step_names = ", ".join(f"s.{column}" for column in STEP_COLUMNS.split(", "))
    active = ",".join(sorted(state.value for state in ACTIVE_STATES))
    return f"""
CREATE OR REPLACE FUNCTION aifr_claim_run(
    p_states text[], p_now double precision, p_owner text, p_expires double precision,
    p_updated double precision)
RETURNS TABLE (
    {outs})
LANGUAGE plpgsql AS $$
DECLARE
    v_id text;
    v_start text[];
    v_pending boolean;
    v_seq bigint;
    v_prev text;
    v_ts text;
    v_hash text;
    v_at integer;
BEGIN
    IF p_states <@ '{{{active}}}'::text[] THEN  -- the queue's index holds them: walk it
        SELECT o_id, o_start, o_pending INTO v_id, v_start, v_pending
        FROM aifr_oldest_free_run(p_states, p_now);
    ELSE  -- states the index does not hold (no claim of a worker's asks for them)
        SELECT id, start_audit, state = 'pending' INTO v_id, v_start, v_pending FROM wf_runs
        WHERE state = ANY(p_states) AND (lease_owner IS NULL OR lease_expires_at < p_now)
        ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED;
    END IF;
    IF v_id IS NULL THEN
        RETURN;
    END IF;
    IF NOT v_pending OR v_start IS NULL THEN  -- taken as it is: its steps, with their progress
        UPDATE wf_runs SET lease_epoch = lease_epoch + 1, lease_owner = p_owner,
            lease_expires_at = p_expires, start_audit = NULL
        WHERE id = v_id RETURNING {RUN_COLUMNS}, lease_epoch INTO {into}, c_lease_epoch;
        c_started := 0;
        RETURN QUERY SELECT {first_only}, c_lease_epoch, c_started, {step_names}
            FROM (SELECT {steps}, row_number() OVER (ORDER BY w.idx) AS n
                  FROM wf_steps w WHERE w.run_id = v_id) s ORDER BY s.n;
        IF NOT FOUND THEN  -- no step: the run alone
            RETURN NEXT;
        END IF;
        RETURN;
    END IF;
    UPDATE wf_runs SET lease_epoch = lease_epoch + 1, lease_owner = p_owner,
        lease_expires_at = p_expires, state = 'running', updated_at = p_updated,
        start_audit = NULL
    WHERE id = v_id RETURNING {RUN_COLUMNS}, lease_epoch INTO {into}, c_lease_epoch;
    -- its start's record (aifr_audit_append's, inline), the chain's lock taken last
{CHAIN_HEAD_SQL}
    c_started := 0;
    FOR i IN 0 .. coalesce(array_length(v_start, 1), 0) / 14 - 1 LOOP
{append_record_sql("v_start", "aifr_claim_run")}
        c_started := c_started + 1;
        v_prev := v_hash;
    END LOOP;
    RETURN NEXT;
END
$$
"""  # noqa: S608  # enum literals and constant column lists


CLAIM_FUNCTION = _claim_function()
"""A claim in one server call: lease the oldest takeable run, start it if queued, read its steps.

The pick is :data:`OLDEST_FREE_FUNCTION`'s walk of the queue's index (states the index
does not hold are found by a plain ``SKIP LOCKED`` query). The run's lease is taken
(its epoch bumped); a pending run queued with its start event (``start_audit``) is set
running and that event appended here, inline, exactly as ``aifr_audit_append`` hashes
and stores it, the chain's lock taken last, after the run's row. Rows, as
:meth:`PostgresRunStore._claimed_run` reads them: the run's columns, its lease epoch and
the number of records appended (1: this claim started the run), then a step's columns;
a run this claim starts comes back alone (its steps are as queued: the client builds
them from its definition, :func:`~aifr.workflows.state.queued_steps`); any other comes
back one row per step in order, the run's own columns on the first row only (a run's
definition and fingerprints, 3.4 kB for 10 steps here, repeated on every row cost 54
µs of client and 25 µs of server CPU a claim).

One function, not the statement of common table expressions it replaces (the pick, the
update, ``aifr_audit_append`` over the update's output, and a lateral join to the
steps): the same claim of a queued 10-step run cost the server 435 µs against 713 in
alternating calls of each under ``EXPLAIN ANALYZE`` (the statement: 707 to 1,047 µs
over four such runs). The statement materialized each expression, called the append as
a function scan over the update's output, and set up the join and its sort even for a
run with no step to read. The pick is called, not inlined: inlined, it saved 32 µs
more, and as its own function it keeps one text and its own plan to test.
"""


STEPS_FILLFACTOR = 25
"""How full a page of ``wf_steps`` is filled by inserts, in per cent: a quarter.

A queued step's row (about 190 bytes here) grows about fourfold when its step completes
(the output, the stored result, the request digest and the record's id: about 690 bytes
for a no-op step). Packed full, as PostgreSQL fills a table by default, a page has no
room for that: the completed row moved to another page and its primary key got a new
index entry, on every step. A quarter filled, a page holds a 10-step run's queued rows
with room for all of them completed, so the update stays on the page (a HOT update: no
index entry, less WAL) and the old version is pruned on a later visit. Measured on
3,100 steps: 23% of the updates HOT before, all of them after (those of the runs queued
once the setting applied); the table 8% larger once its runs completed, its primary key
24% smaller. Pages written before the migration keep their layout.
"""

PG_WORKFLOW_MIGRATIONS = [
    Migration(
        1,
        """
        CREATE TABLE wf_runs (
            id TEXT PRIMARY KEY,
            workflow TEXT NOT NULL,
            workflow_version TEXT NOT NULL,
            definition TEXT NOT NULL,
            inputs TEXT NOT NULL,
            principal TEXT NOT NULL,
            roles TEXT NOT NULL,
            state TEXT NOT NULL,
            fingerprints TEXT NOT NULL,
            error TEXT,
            failed_step TEXT,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            lease_owner TEXT,
            lease_expires_at DOUBLE PRECISION
        );
        CREATE INDEX wf_runs_state ON wf_runs (state, created_at);
        CREATE TABLE wf_steps (
            run_id TEXT NOT NULL REFERENCES wf_runs (id) ON DELETE CASCADE,
            step_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            capability TEXT NOT NULL,
            state TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            fingerprint TEXT,
            inputs TEXT,
            output TEXT,
            error TEXT,
            approval_id TEXT,
            audit_id TEXT,
            request_digest TEXT,
            result TEXT,
            next_attempt_at DOUBLE PRECISION,
            finished_at DOUBLE PRECISION,
            undo_attempt INTEGER NOT NULL,
            undo_capability TEXT,
            undo_output TEXT,
            undo_error TEXT,
            undo_approval_id TEXT,
            undo_digest TEXT,
            undo_result TEXT,
            PRIMARY KEY (run_id, step_id)
        );
        CREATE TABLE wf_outbox (
            id BIGSERIAL PRIMARY KEY,
            kind TEXT NOT NULL,
            url TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at DOUBLE PRECISION NOT NULL,
            delivered_at DOUBLE PRECISION,
            last_error TEXT
        );
        CREATE INDEX wf_outbox_due ON wf_outbox (delivered_at, next_attempt_at)
        """,
    ),
    # The lease's epoch: bumped each time a worker takes the run, so a worker whose
    # lease expired is refused by the database however late its write arrives.
    Migration(2, "ALTER TABLE wf_runs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0"),
    # The work queue in claiming order (see run_rows.CLAIMABLE_INDEX).
    Migration(3, CLAIMABLE_INDEX),
    # A queued run's start, appended by the claim that first takes it (see CLAIM_FUNCTION):
    # aifr_audit_append's fields for the event, prepared when the run was queued.
    Migration(4, "ALTER TABLE wf_runs ADD COLUMN start_audit TEXT[]"),
    # The worker registry (see WorkerRegistry): each ``aifr worker`` process, seen lately.
    Migration(5, workers_table("DOUBLE PRECISION")),
    # A claim's pick through the queue's index whatever the statistics (see the function).
    Migration(6, OLDEST_FREE_FUNCTION),
    # Room on each page for a queued step's row to grow in place (see STEPS_FILLFACTOR).
    Migration(7, f"ALTER TABLE wf_steps SET (fillfactor = {STEPS_FILLFACTOR})"),
    # A claim in one server call (see CLAIM_FUNCTION).
    Migration(8, CLAIM_FUNCTION),
]

_QUEUED = frozenset(
    {RunState.PENDING, RunState.RUNNING, RunState.COMPENSATING, RunState.WAITING_APPROVAL}
)
_RUN_NAMES = RUN_COLUMNS.split(", ")
_STEP_NAMES = STEP_COLUMNS.split(", ")
_INSERT_RUN = f"INSERT INTO wf_runs ({RUN_COLUMNS}) VALUES ({', '.join(['%s'] * 16)})"  # noqa: S608  # constant column list
_INSERT_QUEUED_RUN = (
    f"INSERT INTO wf_runs ({RUN_COLUMNS}, start_audit) "  # noqa: S608  # constant column list
    f"VALUES ({', '.join(['%s'] * 16)}, %s::text[])"
)
_SELECT_RUN = f"SELECT {RUN_COLUMNS} FROM wf_runs WHERE id = %s"  # noqa: S608  # constant column list
_ACQUIRE = (
    "UPDATE wf_runs SET lease_epoch = lease_epoch + "  # noqa: S608  # constant column list
    "(CASE WHEN lease_owner = %s THEN 0 ELSE 1 END), lease_owner = %s, lease_expires_at = %s "
    "WHERE id = %s AND (lease_owner IS NULL OR lease_owner = %s OR lease_expires_at < %s) "
    f"RETURNING {RUN_COLUMNS}, lease_epoch"
)


@functools.lru_cache(maxsize=8)
def _claim_sql(states: frozenset[RunState]) -> str:
    """Lease the oldest takeable run in ``states``, start it if queued, read its steps.

    One call of :data:`CLAIM_FUNCTION` (see it for the rows), so one round trip and one
    commit. Its parameters are the claim's four: the time, the owner, the lease's expiry
    and the time again. The states are literals, the enum's own values, never a caller's
    text: each set of states is a prepared statement of its own (:func:`_claim_call`).
    """
    values = ",".join(sorted(state.value for state in states))
    return f"SELECT * FROM aifr_claim_run('{{{values}}}'::text[], %s, %s, %s, %s)"  # noqa: S608  # enum literals


@functools.lru_cache(maxsize=8)
def _claim_call(states: frozenset[RunState]) -> PreparedCall:
    """:func:`_claim_sql` as a typed :class:`PreparedCall` of its own for these states.

    Named ``aifr_claim_<digest of the states>``.

    Sent through libpq like a lone step's statement, so a worker inside deferred commits
    gets the claimed run back before the claim's commit is confirmed (see
    :meth:`PostgresRunStore.claim`). Its parameters are the claim's four: the time, the
    owner, the lease's expiry and the time again.
    """
    # Named by a digest of the states: PostgreSQL cuts a name at 63 bytes, and two
    # long lists cut alike would share one prepared statement.
    states_key = ",".join(sorted(state.value for state in states)).encode()
    name = "aifr_claim_" + hashlib.sha256(states_key).hexdigest()[:16]
    text = _claim_sql(states) % (
        "$1::double precision",
        "$2::text",
        "$3::double precision",
        "$4::double precision",
    )
    return PreparedCall(name, text, typed=True)


def _claim_params(owner: str, ttl_s: float, now: float) -> tuple[str, ...]:
    """:func:`_claim_call`'s four parameters: the time, the owner, the lease's expiry, the time."""
    return (repr(now), owner, repr(now + ttl_s), repr(now))


_RUN_SAVED = PreparedCall(
    "aifr_run_saved",
    "SELECT r_seq, r_id, r_ts, r_prev, r_hash FROM aifr_run_saved($1, $2, $3, $4, $5, "
    "$6::integer, $7, $8, $9, $10, $11::integer, $12, $13::text[])",
)
"""A lone writer's save of a run alone (no steps, no notification) and its record."""


def run_change_text(run: RunRecord) -> tuple[str | None, ...]:
    """What a save changes in a run's row, as text parameters in the server functions' order.

    State, fingerprints, error, failed step, cancel flag and update time (``aifr_run_saved``
    and ``aifr_step_ends_run`` take them in this order).
    """
    return (
        run.state.value,
        encode_column(run.fingerprints),
        encode_column(run.error),
        run.failed_step,
        str(int(run.cancel_requested)),
        repr(run.updated_at),
    )


def _lease_taken(run_id: str) -> str:
    return f"run {run_id}: the lease was taken over by another worker"


_STEP_UPSERT = (
    f"INSERT INTO wf_steps ({STEP_COLUMNS}) VALUES ({', '.join(['%s'] * 19)}) "  # noqa: S608  # constant column list
    "ON CONFLICT (run_id, step_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _STEP_NAMES if c not in ("run_id", "step_id"))
)


def _run(row: Sequence[Any]) -> RunRecord:
    return run_from_row(dict(zip(_RUN_NAMES, row, strict=True)))


def _step(row: Sequence[Any]) -> StepRecord:
    return step_from_values(row)


@fast_init
@dataclass(frozen=True, slots=True)
class _Attempt:
    """What the lease holder said of a step attempt it is about to invoke."""

    unrecorded: bool
    finish: RunFinish | None
    fence: int | None
    finish_prepared: PreparedEvent | None = None
    """The end's event redacted and encoded when the end was armed, before the effect."""


class _AheadArmed(NamedTuple):
    """What a thread's run end claims ahead with (see :meth:`PostgresRunStore.claiming_ahead`)."""

    states: frozenset[RunState]
    owner: str
    ttl_s: float
    clock: Callable[[], float]
    wanted: Callable[[], bool]


class _ClaimedAhead(NamedTuple):
    """What a thread's run end claimed, kept for the thread's next :meth:`claim` of it."""

    states: frozenset[RunState]
    owner: str
    rows: LaterRows
    """The claim's rows: a run, or none when none was free (read when the claim is taken)."""


class _ThreadClaims(threading.local):
    """A thread's claims: what its last claim read, what its run ends claim ahead."""

    steps: tuple[str, builtins.list[StepRecord]] | None = None
    """The claimed run's id and steps, for the thread's next :meth:`PostgresRunStore.steps`."""
    armed: _AheadArmed | None = None
    """Set inside :meth:`PostgresRunStore.claiming_ahead`."""
    ahead: _ClaimedAhead | None = None
    """The run a run end claimed, not yet handed out by :meth:`PostgresRunStore.claim`."""


class PostgresRunStore:
    """The ``RunStore`` and ``NotificationOutbox`` ports over PostgreSQL."""

    def __init__(self, database: PostgresDatabase, ledger: AuditLedger) -> None:
        self.database = database
        self.ledger = ledger
        self.group = PostgresGroupCommit(database, ledger)
        self._completions: dict[str, Completion] = {}
        self._attempts: dict[str, _Attempt] = {}
        self._completions_lock = threading.Lock()
        self._epochs: dict[str, int] = {}
        self._claimed = _ThreadClaims()
        database.migrate("workflows", PG_WORKFLOW_MIGRATIONS)

    def deferred_commits(self) -> AbstractContextManager[None]:
        """Step writes of this thread may return before their commits are confirmed.

        See :meth:`PostgresDatabase.deferring`; the engine drives each run inside it.
        """
        return self.database.deferring()

    @contextlib.contextmanager
    def claiming_ahead(
        self,
        states: frozenset[RunState],
        owner: str,
        ttl_s: float,
        clock: Callable[[], float],
        wanted: Callable[[], bool],
    ) -> Iterator[None]:
        """Inside the block, this thread's run ends claim its next run in their own commit.

        A lone writer's last step and its run's end are one statement
        (``aifr_step_ends_run``); inside the block, when ``wanted()`` says the thread
        will drive another run, the claim of the next run in ``states`` for ``owner``
        goes out after it, in the same pipeline and implicit transaction
        (:meth:`PreparedCall.pair_before_commit`), and the thread's next :meth:`claim`
        in those states returns that run (or ``None``, when none was free) without
        asking the database.

        Claimed beside the end instead, the claim was a round trip of its own, which
        waited for the end's commit (the audit chain's lock, its flush) and then flushed
        its own commit before the next run's first effect.

        A run claimed ahead that no :meth:`claim` took by the block's end (the worker
        stopped, or reached its turn's limit) has its lease given back there.
        """
        self._claimed.armed = _AheadArmed(states, owner, ttl_s, clock, wanted)
        try:
            yield
        finally:
            self._claimed.armed = None
            left = self._claimed.ahead
            self._claimed.ahead = None
            if left is not None:
                self._give_back_ahead(left)

    def claim_ahead_call(self) -> tuple[PreparedCall, tuple[str, ...]] | None:
        """The claim a run end of this thread sends after it, with its parameters; or ``None``.

        ``None`` outside :meth:`claiming_ahead`, when its ``wanted()`` says no, and while a
        run claimed ahead is not yet taken (one at a time).
        """
        armed = self._claimed.armed
        if armed is None or self._claimed.ahead is not None or not armed.wanted():
            return None
        now = armed.clock()
        return _claim_call(armed.states), _claim_params(armed.owner, armed.ttl_s, now)

    def claimed_ahead(self, rows: LaterRows) -> None:
        """Keep the rows of a run end's claim (:meth:`claim_ahead_call`), read when taken."""
        armed = self._claimed.armed
        if armed is not None:
            self._claimed.ahead = _ClaimedAhead(armed.states, armed.owner, rows)

    def _give_back_ahead(self, left: _ClaimedAhead) -> None:
        """Release the lease of a run claimed ahead and not taken, if the claim took one."""
        try:
            with translate_pg_errors("claiming a run"):
                rows = left.rows.rows()
            if rows:
                self.release(rows[0][0], left.owner)
        except AifrError as exc:  # the claim failed, or the database is away: nothing held
            logger.error("a run claimed ahead was not given back: %s", exc.message)

    def transact(
        self,
        action: str,
        work: Callable[[psycopg.Connection[tuple[Any, ...]]], T],
        run_id: str = "",
    ) -> T:
        """Run ``work`` in a write transaction; return once committed.

        ``work`` asks for its audit records with ``self.group.audit_later`` (or
        ``prepared_later``, for an event prepared before the transaction); they are appended
        at the transaction's end, under the audit chain's lock.

        The transaction is shared with the other runs of this process writing at the
        same moment (:class:`PostgresGroupCommit`): ``work`` runs in its own savepoint,
        so its failure (a fenced write, a database error, named by ``action``) rolls
        back only its own writes. ``run_id`` names the one run whose rows ``work``
        locks: a batch runs its jobs in run-id order, so batches of several processes
        take their row locks in one order and cannot deadlock on each other's rows.
        """

        def translated(conn: psycopg.Connection[tuple[Any, ...]]) -> T:
            with translate_pg_errors(action):
                return work(conn)

        return self.group.run(translated, run_id)

    def transact_one(
        self,
        action: str,
        work: Callable[[psycopg.Connection[tuple[Any, ...]]], T],
        alone: Callable[[psycopg.Connection[tuple[Any, ...]]], T],
        run_id: str = "",
    ) -> T:
        """:meth:`transact`, where ``alone`` does ``work``'s writes in one statement.

        A writer with nobody else writing runs ``alone(conn)`` on a connection outside
        any transaction (one statement, its own commit); in a batch ``work`` runs as
        usual (see :class:`~aifr.storage.postgres.groupcommit.OneStatement`).
        """

        def translated(conn: psycopg.Connection[tuple[Any, ...]]) -> T:
            with translate_pg_errors(action):
                return work(conn)

        def translated_alone(conn: psycopg.Connection[tuple[Any, ...]]) -> T:
            with translate_pg_errors(action):
                return alone(conn)

        return self.group.run(OneStatement(translated, translated_alone), run_id)

    def _one(self, action: str, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        with translate_pg_errors(action), self.database.connection() as conn:
            return conn.execute(sql, params).fetchone()

    def _all(self, action: str, sql: str, params: Sequence[Any]) -> builtins.list[tuple[Any, ...]]:
        with translate_pg_errors(action), self.database.connection() as conn:
            return conn.execute(sql, params).fetchall()

    # -- runs -----------------------------------------------------------------------------

    def create(
        self,
        run: RunRecord,
        steps: Sequence[StepRecord],
        audit: AuditEvent,
        *,
        start: AuditEvent | None = None,
    ) -> AuditRecord:
        """Insert the run and its steps and append ``audit`` in one transaction.

        A queued run keeps ``start`` prepared (redacted and encoded now, chained later),
        and the claim that first takes it appends it (see :meth:`claim`).
        """
        params = run_params(run, encode_column(run.definition) or "null")
        if start is not None and run.state is RunState.PENDING and run.lease_owner is None:
            insert, params = (
                _INSERT_QUEUED_RUN,
                (
                    *params,
                    append_fields([self.ledger.prepare(start)]),
                ),
            )
        else:
            insert = _INSERT_RUN

        def create_in(conn: psycopg.Connection[tuple[Any, ...]]) -> PendingAudit:
            conn.execute(insert, params)
            if run.lease_owner is not None:
                self._held(run.id, 0)
            else:
                conn.execute("SELECT pg_notify(%s, %s)", (WAKE_CHANNEL, run.id))
            if steps:
                with conn.cursor() as cursor:
                    cursor.executemany(_STEP_UPSERT, [step_params(s) for s in steps])
            return self.group.audit_later(audit)

        return self.transact("creating a run", create_in, run.id).record

    def save(
        self,
        run: RunRecord,
        steps: Sequence[StepRecord] = (),
        audit: AuditEvent | None = None,
        notification: Notification | None = None,
        *,
        owner: str | None = None,
    ) -> AuditRecord | None:
        """Write the run, the given steps, the audit record and the notification at once.

        Raises:
            WorkflowError: ``workflow.lease_lost`` when another worker holds the lease.
        """

        def save_in(conn: psycopg.Connection[tuple[Any, ...]]) -> PendingAudit | None:
            return self.save_in(conn, run, steps, audit, notification, owner)

        if audit is None or steps or notification is not None or self._wakes(run):
            pending = self.transact("saving a run", save_in, run.id)
        else:  # the run alone and its record: one statement for a lone writer
            pending = self.transact_one(
                "saving a run",
                save_in,
                lambda conn: self._saved_alone(conn, run, audit, owner),
                run.id,
            )
        return pending.record if pending is not None else None

    def _saved_alone(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        run: RunRecord,
        audit: AuditEvent,
        owner: str | None,
    ) -> PendingAudit:
        """:meth:`save_in`'s run update and audit record as one statement (``aifr_run_saved``)."""
        prepared = self.ledger.prepare(audit)
        fence = self._fence_of(run.id) if owner is not None else None
        rows = _RUN_SAVED.rows(
            conn,
            (
                run.id,
                *run_change_text(run),
                run.lease_owner,
                None if run.lease_expires_at is None else repr(run.lease_expires_at),
                owner,
                None if fence is None else str(fence),
                _lease_taken(run.id),
                append_fields([prepared]),
            ),
        )
        pending = PendingAudit(prepared, None)
        pending.resolve(appended_records([prepared], rows)[0])
        return pending

    @staticmethod
    def _wakes(run: RunRecord) -> bool:
        """Whether saving ``run`` queues it for a worker (a ``NOTIFY`` goes with the commit)."""
        return run.lease_owner is None and run.state in _QUEUED

    def save_in(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        run: RunRecord,
        steps: Sequence[StepRecord],
        audit: AuditEvent | None,
        notification: Notification | None,
        owner: str | None,
    ) -> PendingAudit | None:
        """:meth:`save` inside the caller's grouped transaction; the audit record comes later."""
        fence = self._fence_of(run.id) if owner is not None else None
        conn.execute(
            "WITH w AS (UPDATE wf_runs SET state = %s, fingerprints = %s, error = %s, "
            "failed_step = %s, cancel_requested = %s, updated_at = %s, lease_owner = %s, "
            "lease_expires_at = %s WHERE id = %s "
            "AND (%s::text IS NULL OR lease_owner IS NULL OR lease_owner = %s) "
            "AND (%s::integer IS NULL OR lease_epoch = %s) RETURNING 1) "
            "SELECT aifr_require_one(count(*), %s, %s) FROM w",
            (
                run.state.value,
                encode_column(run.fingerprints),
                encode_column(run.error),
                run.failed_step,
                int(run.cancel_requested),
                run.updated_at,
                run.lease_owner,
                run.lease_expires_at,
                run.id,
                owner,
                owner,
                fence,
                fence,
                _lease_taken(run.id),
                run.id,
            ),
        )  # refused on the server (workflow.lease_lost): no answer awaited here
        if steps:
            with conn.cursor() as cursor:
                cursor.executemany(_STEP_UPSERT, [step_params(s) for s in steps])
        if self._wakes(run):
            conn.execute("SELECT pg_notify(%s, %s)", (WAKE_CHANNEL, run.id))  # sent on commit
        if notification is not None:
            conn.execute(
                "INSERT INTO wf_outbox (kind, url, body, created_at, next_attempt_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                (
                    notification.kind,
                    notification.url,
                    encode_column(notification.body),
                    run.updated_at,
                    run.updated_at,
                ),
            )
        return self.group.audit_later(audit) if audit is not None else None

    def begin_attempt(self, key: str, *, unrecorded: bool, finish: RunFinish | None) -> None:
        """Note what the lease holder knows of the attempt ``key`` (see ``RunStore``)."""
        # The run's end is the last step's second record: it is prepared now, while the
        # previous commit flushes, not between the step's effect and its statement. An
        # event that cannot be prepared is left to fail where it did, in the step's write.
        prepared = None
        if finish is not None:
            with contextlib.suppress(AuditError):
                prepared = self.ledger.prepare(finish.audit)
        with self._completions_lock:
            self._attempts[key] = _Attempt(
                unrecorded, finish, self._epochs.get(_run_of(key)), prepared
            )

    def fence(self, key: str) -> int | None:
        """The lease epoch this process held when it began attempt ``key`` (``None``: unknown).

        A step's success is written only while the run's ``lease_epoch`` is still this
        one: a worker whose lease expired and was taken meanwhile is refused by the
        database, however late its write arrives (fencing).
        """
        with self._completions_lock:
            attempt = self._attempts.get(key)
        return attempt.fence if attempt is not None else None

    def _fence_of(self, run_id: str) -> int | None:
        with self._completions_lock:
            return self._epochs.get(run_id)

    def check_fence_in(
        self, conn: psycopg.Connection[tuple[Any, ...]], run_id: str, epoch: int
    ) -> None:
        """Inside the caller's transaction: refuse unless the run's lease epoch is ``epoch``.

        ``FOR SHARE`` holds the run's row until the caller commits, so a worker taking
        the lease meanwhile waits for this transaction (and then bumps the epoch).

        Raises:
            WorkflowError: ``workflow.lease_lost`` when the lease changed hands.
        """
        row = conn.execute(
            "SELECT 1 FROM wf_runs WHERE id = %s AND lease_epoch = %s FOR SHARE", (run_id, epoch)
        ).fetchone()
        if row is None:
            raise WorkflowError(
                f"run {run_id}: the lease was taken over by another worker; "
                "its audit record is refused",
                code=ErrorCode.WORKFLOW_LEASE_LOST,
                run_id=run_id,
            )

    def append_fenced(self, event: AuditEvent, run_id: str, epoch: int) -> AuditRecord:
        """Append ``event`` only while the run's lease epoch is still ``epoch`` (one transaction).

        Raises:
            WorkflowError: ``workflow.lease_lost``; nothing is appended.
        """

        def append_in(conn: psycopg.Connection[tuple[Any, ...]]) -> AuditRecord:
            self.check_fence_in(conn, run_id, epoch)
            return self.ledger.append_in(conn, event)

        return self.transact("appending a leased run's audit record", append_in)

    def _held(self, run_id: str, epoch: int | None) -> None:
        with self._completions_lock:
            if epoch is None:
                self._epochs.pop(run_id, None)
            else:
                self._epochs[run_id] = epoch

    def is_unrecorded(self, key: str) -> bool:
        """Whether the lease holder vouched that attempt ``key`` has no stored result."""
        with self._completions_lock:
            attempt = self._attempts.get(key)
        return attempt is not None and attempt.unrecorded

    def finishes(self, key: str) -> bool:
        """Whether the run's end is armed to be written with attempt ``key``'s result."""
        with self._completions_lock:
            attempt = self._attempts.get(key)
        return attempt is not None and attempt.finish is not None

    def armed_finish(self, key: str) -> tuple[RunFinish, int | None, PreparedEvent] | None:
        """The run's end armed for attempt ``key``, the lease epoch it is fenced on, its event.

        For a lone writer that sends the step and the run's end as one statement
        (``aifr_step_ends_run``) instead of :meth:`finish_in`'s savepoint. The event comes
        prepared for the chain (:meth:`AuditLedger.prepare`) when the end was armed.
        """
        with self._completions_lock:
            attempt = self._attempts.get(key)
        if attempt is None or attempt.finish is None:
            return None
        finish = attempt.finish
        return finish, self._fence_of(finish.run.id), self._finish_event(attempt, finish)

    def _finish_event(self, attempt: _Attempt, finish: RunFinish) -> PreparedEvent:
        """The armed end's event as prepared by :meth:`begin_attempt`, or prepared now.

        Raises:
            AuditError: the event is not JSON-safe (it failed there too).
        """
        return attempt.finish_prepared or self.ledger.prepare(finish.audit)

    def finish_in(
        self, conn: psycopg.Connection[tuple[Any, ...]], key: str, now: float
    ) -> RunRecord | None:
        """Inside the step's own transaction: write the run's end armed for ``key``, if any.

        Returns ``None`` when nothing was armed or the lease was lost meanwhile (the
        engine's own end-of-run write then finds the lease gone and stops).
        """
        with self._completions_lock:
            attempt = self._attempts.get(key)
        finish = attempt.finish if attempt is not None else None
        if attempt is None or finish is None:
            return None
        run = finish.run.evolve(updated_at=now)
        self.group.answered()  # the step's own refusal is the step's, not this part's
        try:
            with self.group.savepoint(conn):  # a lost lease undoes only this part, audit too
                self.save_in(conn, run, (), None, None, finish.owner)
                self.group.prepared_later(self._finish_event(attempt, finish))
        except WorkflowError as exc:
            if exc.code is not ErrorCode.WORKFLOW_LEASE_LOST:
                raise
            return None
        return run

    def note_completion(self, key: str, finished_run: RunRecord | None = None) -> None:
        """Remember that the step (or undo) with this key was recorded as completed."""
        with self._completions_lock:
            self._completions[key] = Completion(finished_run)

    def consume_completion(self, key: str) -> Completion | None:
        """How the runtime recorded this step key's success, if it did (asked once)."""
        with self._completions_lock:
            self._attempts.pop(key, None)
            return self._completions.pop(key, None)

    def is_cancel_requested(self, run_id: str) -> bool:
        """Whether someone asked to cancel the run."""
        row = self._one(
            "reading a run", "SELECT cancel_requested FROM wf_runs WHERE id = %s", (run_id,)
        )
        return bool(row and row[0])

    def request_cancel(self, run_id: str) -> None:
        """Flag a run for cancellation; its lease holder stops at the next step."""
        self._one_write(
            "cancelling a run", "UPDATE wf_runs SET cancel_requested = 1 WHERE id = %s", (run_id,)
        )

    def _one_write(self, action: str, sql: str, params: Sequence[Any]) -> int:
        with translate_pg_errors(action), self.database.connection() as conn:
            return conn.execute(sql, params).rowcount

    def get(self, run_id: str) -> RunRecord | None:
        """The run, or ``None``."""
        row = self._one("reading a run", _SELECT_RUN, (run_id,))
        return _run(row) if row is not None else None

    def steps(self, run_id: str) -> builtins.list[StepRecord]:
        """The run's steps in definition order.

        Right after :meth:`claim` on the same thread, the steps the claim read with the
        run (under its new lease, so nobody else has written them since) are returned
        once without asking again.
        """
        claimed = self._claimed.steps
        if claimed is not None:
            self._claimed.steps = None
            if claimed[0] == run_id:
                return claimed[1]
        rows = self._all(
            "reading steps",
            f"SELECT {STEP_COLUMNS} FROM wf_steps WHERE run_id = %s ORDER BY idx",  # noqa: S608  # constant column list
            (run_id,),
        )
        return [_step(r) for r in rows]

    def step(self, run_id: str, step_id: str) -> StepRecord | None:
        """One step, or ``None``."""
        row = self._one(
            "reading a step",
            f"SELECT {STEP_COLUMNS} FROM wf_steps WHERE run_id = %s AND step_id = %s",  # noqa: S608  # constant column list
            (run_id, step_id),
        )
        return _step(row) if row is not None else None

    def list(self, *, state: RunState | None = None, limit: int = 100) -> builtins.list[RunRecord]:
        """Runs, newest first, optionally of one state."""
        rows = self._all(
            "listing runs",
            f"SELECT {RUN_COLUMNS} FROM wf_runs WHERE (%s::text IS NULL OR state = %s) "  # noqa: S608  # constant column list
            "ORDER BY created_at DESC, id DESC LIMIT %s",
            (state and state.value, state and state.value, limit),
        )
        return [_run(r) for r in rows]

    def count_by_state(self) -> dict[str, int]:
        """How many runs are in each state (states with none are left out)."""
        rows = self._all(
            "counting runs", "SELECT state, COUNT(*) FROM wf_runs GROUP BY state ORDER BY state", ()
        )
        return {str(row[0]): int(row[1]) for row in rows}

    def unfinished(self, states: frozenset[RunState], limit: int = 100) -> builtins.list[RunRecord]:
        """Runs in ``states``, oldest first."""
        rows = self._all(
            "listing unfinished runs",
            f"SELECT {RUN_COLUMNS} FROM wf_runs WHERE state = ANY(%s) "  # noqa: S608  # constant column list
            "ORDER BY created_at, id LIMIT %s",
            (sorted(s.value for s in states), limit),
        )
        return [_run(r) for r in rows]

    def prunable(self, states: frozenset[RunState], finished_before: float) -> int:
        """How many runs in ``states`` last changed before ``finished_before``."""
        row = self._one(
            "counting runs to prune",
            f"SELECT COUNT(*) FROM wf_runs WHERE {prunable_where(states, '%s')}",  # noqa: S608  # enum literals and "%s" marks
            (finished_before, finished_before),
        )
        return int(row[0]) if row is not None else 0

    def prune(
        self, states: frozenset[RunState], finished_before: float, audit: PruneAudit, limit: int
    ) -> builtins.list[str]:
        """Delete up to ``limit`` such runs (steps cascade) and append ``audit(ids)``: one commit.

        Rows another transaction holds are skipped (``SKIP LOCKED``): two workers pruning
        at once delete different runs instead of waiting for each other.
        """
        delete = (
            "DELETE FROM wf_runs WHERE id IN (SELECT id FROM wf_runs "  # noqa: S608  # enum literals and "%s" marks
            f"WHERE {prunable_where(states, '%s')} ORDER BY created_at, id LIMIT %s "
            "FOR UPDATE SKIP LOCKED) RETURNING id"
        )

        def prune_in(conn: psycopg.Connection[tuple[Any, ...]]) -> builtins.list[str]:
            rows = conn.execute(delete, (finished_before, finished_before, limit)).fetchall()
            ids = sorted(str(row[0]) for row in rows)
            if ids:
                self.group.audit_later(audit(ids))
            return ids

        return self.transact("pruning runs", prune_in)

    # -- leases ---------------------------------------------------------------------------

    def acquire(self, run_id: str, owner: str, ttl_s: float, now: float) -> RunRecord | None:
        """Take the lease if it is free, expired or already ``owner``'s."""
        row = self._one(
            "leasing a run",
            _ACQUIRE,
            (owner, owner, now + ttl_s, run_id, owner, now),
        )
        if row is None:
            return None
        self._held(run_id, row[-1])
        return _run(row[:-1])

    def claim(
        self, states: frozenset[RunState], owner: str, ttl_s: float, now: float
    ) -> RunRecord | None:
        """Lease the oldest free or expired run in ``states`` (``FOR UPDATE SKIP LOCKED``).

        A pending run queued with its start event comes back running, the event
        appended in the claim's own transaction (the engine then has no start to
        commit). Its steps come back in the same round trip and are handed to this
        thread's next :meth:`steps` call for the run (the engine loads the run's context
        next). Inside :meth:`deferred_commits` the claim returns before its commit is
        confirmed, as a lone step's write does: the worker loads the run and checks its
        first step while the server flushes, and settles before that step's effect. It
        goes out beside the thread's unconfirmed commit, if any, on another connection
        (the worker's last run's last step, still flushing: nothing of the next run
        depends on it, and its first effect waits for both).
        """
        claims = self._claimed
        claims.steps = None
        ahead = claims.ahead
        if ahead is not None:
            claims.ahead = None
            if ahead.states != states or ahead.owner != owner:
                self._give_back_ahead(ahead)  # claimed for another kind of turn
            else:
                with translate_pg_errors("claiming a run"):
                    rows = ahead.rows.rows()
                return self._claimed_run(rows) if rows else None
        call = _claim_call(states)
        params = _claim_params(owner, ttl_s, now)
        database = self.database
        with translate_pg_errors("claiming a run"), database.connection(beside=True) as conn:
            rows = call.rows_deferred(database, conn, params, "claiming a run", beside=True)
        return self._claimed_run(rows) if rows else None

    def _claimed_run(self, rows: Sequence[Sequence[Any]]) -> RunRecord:
        """The run a claim's rows lease, noted as held, its steps kept for :meth:`steps`.

        See :data:`CLAIM_FUNCTION` for the rows.
        """
        width = len(_RUN_NAMES)
        first = rows[0]
        self._held(first[0], first[width])
        run = _run(first[:width])
        if first[width + 1]:  # started by this claim: its steps as queued (not read back)
            spec = WorkflowSpec.from_snapshot(run.definition)
            steps = queued_steps(run.id, spec, run.fingerprints)
        else:
            steps = [_step(r[width + 2 :]) for r in rows if r[width + 2] is not None]
        self._claimed.steps = (run.id, steps)
        return run

    def take_over(self, run_id: str, dead_owner: str, owner: str, ttl_s: float, now: float) -> bool:
        """Take a lease from an owner known to be dead (its process is gone)."""
        row = self._one(
            "leasing a run",
            "UPDATE wf_runs SET lease_owner = %s, lease_expires_at = %s, "
            "lease_epoch = lease_epoch + 1 WHERE id = %s AND lease_owner = %s "
            "RETURNING lease_epoch",
            (owner, now + ttl_s, run_id, dead_owner),
        )
        if row is not None:
            self._held(run_id, row[0])
        return row is not None

    def renew(self, run_ids: Sequence[str], owner: str, ttl_s: float, now: float) -> None:
        """Extend ``owner``'s leases (one statement for all of them)."""
        if run_ids:
            self._one_write(
                "renewing leases",
                "UPDATE wf_runs SET lease_expires_at = %s WHERE id = ANY(%s) AND lease_owner = %s",
                (now + ttl_s, builtins.list(run_ids), owner),
            )

    def release(self, run_id: str, owner: str) -> None:
        """Give the lease back; a run still to be driven wakes an idle worker for it.

        A worker stopping between steps hands its run on this way, and the run should
        not wait for the others' next poll (one statement: the notification goes with
        its commit, and only when a lease was really given back).
        """
        self._claimed.steps = None
        self._one_write("releasing a lease", _RELEASE, (run_id, owner, WAKE_CHANNEL))

    def listen(self, wake: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """Call ``wake`` whenever a run is queued or released, until ``stop`` is set.

        One dedicated connection ``LISTEN``s on :data:`WAKE_CHANNEL` in a daemon thread;
        when the connection drops it reconnects (and wakes once, as notifications may
        have been missed meanwhile). Polling stays the fallback.
        """
        thread = threading.Thread(
            target=self._listen, args=(wake, stop), name="aifr-listen", daemon=True
        )
        thread.start()
        return thread

    def _listen(self, wake: Callable[[], None], stop: threading.Event) -> None:
        psycopg = import_psycopg()
        listen = psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(WAKE_CHANNEL))
        while not stop.is_set():
            try:
                with psycopg.connect(self.database.dsn, autocommit=True) as conn:
                    conn.execute(listen)
                    wake()
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            wake()
            except psycopg.Error:
                stop.wait(1.0)

    # -- outbox ---------------------------------------------------------------------------

    def due(self, now: float, limit: int = 50) -> builtins.list[OutboxItem]:
        """Undelivered notifications whose next attempt is due, oldest first."""
        rows = self._all(
            "reading the outbox",
            "SELECT id, kind, url, body, created_at, attempts, next_attempt_at, delivered_at, "
            "last_error FROM wf_outbox WHERE delivered_at IS NULL AND next_attempt_at <= %s "
            "ORDER BY id LIMIT %s",
            (now, limit),
        )
        return [
            OutboxItem(
                id=r[0],
                notification=Notification(r[1], r[2], json.loads(r[3])),
                created_at=r[4],
                attempts=r[5],
                next_attempt_at=r[6],
                delivered_at=r[7],
                last_error=r[8],
            )
            for r in rows
        ]

    def delivered(self, item_id: int, now: float) -> None:
        """Mark a notification delivered."""
        self._one_write(
            "updating the outbox",
            "UPDATE wf_outbox SET delivered_at = %s, attempts = attempts + 1 WHERE id = %s",
            (now, item_id),
        )

    def retry_later(self, item_id: int, next_attempt_at: float, error: str) -> None:
        """Count a failed attempt and schedule the next."""
        self._one_write(
            "updating the outbox",
            "UPDATE wf_outbox SET attempts = attempts + 1, next_attempt_at = %s, "
            "last_error = %s WHERE id = %s",
            (next_attempt_at, error[:500], item_id),
        )

    def pending(self) -> int:
        """Undelivered notifications."""
        row = self._one(
            "reading the outbox", "SELECT COUNT(*) FROM wf_outbox WHERE delivered_at IS NULL", ()
        )
        return int(row[0]) if row is not None else 0


def _run_of(key: str) -> str:
    """The run id of a step key (``wf:<run>:...``), or ``""``."""
    parsed = StepKey.parse(key)
    return parsed.run_id if parsed is not None else ""
