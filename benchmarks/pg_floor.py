"""The CPython floor on PostgreSQL: the least a queued, leased, audited step can cost here.

The bare SKIP LOCKED loop says what claiming and completing a job costs the server. It
does not say what Python costs: a governed step must also validate its inputs and
output, look up a decision, describe the invocation, and append a hash-chained record
that stays one chain under any number of workers. This floor does the minimum of that,
as :class:`benchmarks.floor.LeanFloor` does on SQLite (it shares its Python,
:class:`~benchmarks.floor.LeanGovernance`): a run is claimed with ``FOR UPDATE SKIP
LOCKED`` under a lease epoch, and each step is one statement in autocommit, so one round
trip and one commit, to a server function that writes the step under its fence, takes
the chain's lock, hashes the record from the head and inserts it. The statement is sent
as aifr's lone worker sends its own: through libpq, its rows back before its commit, the
next step's pre-effect work done while the server commits, the commit confirmed before
the next step's effect.

It is a measuring stick, never used by aifr: no hooks, no request context, no
redaction, no idempotency, no policy engine, no audit record of the run's start or end,
no notifications, no error paths beyond the fence.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Final

import psycopg
from psycopg import sql

from aifr.storage.postgres.prepared_call import LaterRows, PreparedCall
from benchmarks.floor import CANONICAL, LeanGovernance

__all__ = ["LeanPgFloor"]

_DDL: Final = (
    """CREATE TABLE floor_runs (
        run_id TEXT PRIMARY KEY, created BIGSERIAL, state TEXT NOT NULL, owner TEXT,
        lease_epoch INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX floor_runs_queued ON floor_runs (created) WHERE state = 'queued'",
    """CREATE TABLE floor_steps (
        run_id TEXT NOT NULL, step_id TEXT NOT NULL, state TEXT NOT NULL, output TEXT,
        finished_at TEXT, audit_id TEXT, PRIMARY KEY (run_id, step_id))""",
    """CREATE TABLE floor_audit (
        seq BIGINT PRIMARY KEY, id TEXT NOT NULL, ts TEXT NOT NULL, kind TEXT NOT NULL,
        principal TEXT NOT NULL, capability_id TEXT, capability_fingerprint TEXT,
        decision TEXT, rule_id TEXT, inputs_digest TEXT, outcome TEXT, trace_id TEXT,
        request_id TEXT, run_id TEXT, details TEXT NOT NULL, prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL)""",
    "CREATE TABLE floor_head (id INTEGER PRIMARY KEY CHECK (id = 1))",
    "INSERT INTO floor_head VALUES (1)",
    r"""CREATE FUNCTION floor_step(
        p_run text, p_step text, p_epoch integer, p_output text, p_last boolean,
        p_random text, p_event text, p_decision text, p_rule text, p_digest text,
        p_request text, p_details text)
    RETURNS text LANGUAGE plpgsql AS $$
    DECLARE
        v_seq bigint;
        v_prev text;
        v_ts text;
        v_id text;
        v_hash text;
    BEGIN
        PERFORM 1 FROM floor_steps WHERE run_id = p_run AND step_id = p_step AND EXISTS (
            SELECT 1 FROM floor_runs WHERE run_id = p_run AND lease_epoch = p_epoch FOR SHARE)
        FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'run %: the lease was taken over', p_run;
        END IF;
        PERFORM 1 FROM floor_head WHERE id = 1 FOR UPDATE;
        SELECT seq, hash INTO v_seq, v_prev FROM floor_audit ORDER BY seq DESC LIMIT 1;
        IF NOT FOUND THEN
            v_seq := 0;
            v_prev := repeat('0', 64);
        END IF;
        v_ts := to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
        v_seq := v_seq + 1;
        v_id := 'au-' || v_seq || '-' || p_random;
        v_hash := encode(sha256(convert_to('{"event":' || p_event || ',"id":"' || v_id
            || '","prev_hash":"' || v_prev || '","seq":' || v_seq || ',"ts":"' || v_ts
            || '"}', 'UTF8')), 'hex');
        INSERT INTO floor_audit VALUES (v_seq, v_id, v_ts, 'invocation', 'bench',
            'bench.noop', 'fp', p_decision, p_rule, p_digest, 'ok', p_request, p_request,
            p_run, p_details, v_prev, v_hash);
        UPDATE floor_steps SET state = 'completed', output = p_output, finished_at = v_ts,
            audit_id = v_id
        WHERE run_id = p_run AND step_id = p_step;
        IF p_last THEN
            UPDATE floor_runs SET state = 'completed', owner = NULL WHERE run_id = p_run;
        END IF;
        RETURN v_id;
    END
    $$""",
)
_CLAIM: Final = PreparedCall(
    "floor_claim",
    "UPDATE floor_runs SET state = 'running', owner = $1, lease_epoch = lease_epoch + 1 "
    "WHERE run_id = (SELECT run_id FROM floor_runs WHERE state = 'queued' ORDER BY created "
    "LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING run_id, lease_epoch",
    typed=True,
)
"""A run's claim, sent as aifr's worker sends its own: its row back before its commit."""
_STEP_CALL: Final = PreparedCall(
    "floor_step",
    "SELECT floor_step($1, $2, $3::integer, $4, $5::boolean, $6, $7, $8, $9, $10, $11, $12)",
)
"""A step's one statement, sent through libpq as aifr sends its own (text parameters)."""


class LeanPgFloor:
    """Minimal governed workflow steps on PostgreSQL, in a schema of their own.

    :meth:`queue` inserts runs of ``steps`` pending steps; :meth:`drain` claims and drives
    them one at a time until none is left, as one ``aifr worker --concurrency 1`` does.
    """

    def __init__(self, dsn: str, schema: str, *, create: bool = True) -> None:
        """``create=False``: drive the queue another ``LeanPgFloor`` created (another process)."""
        self.conn = psycopg.connect(dsn, autocommit=True)
        self._schema = schema
        self._created = create
        identifier = sql.Identifier(schema)
        if create:
            self.conn.execute(sql.SQL("CREATE SCHEMA {}").format(identifier))
        self.conn.execute(sql.SQL("SET search_path TO {}").format(identifier))
        if create:
            for statement in _DDL:
                self.conn.execute(statement)
        self._governance = LeanGovernance()
        self._owner = f"floor-{os.getpid()}"

    def queue(self, runs: int, steps: int) -> None:
        """Queue ``runs`` runs of ``steps`` steps (one transaction)."""
        ids = [os.urandom(16).hex() for _ in range(runs)]
        with self.conn.transaction(), self.conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO floor_runs (run_id, state) VALUES (%s, 'queued')",
                [(run_id,) for run_id in ids],
            )
            cursor.executemany(
                "INSERT INTO floor_steps (run_id, step_id, state) VALUES (%s, %s, 'pending')",
                [(run_id, f"s{n}") for run_id in ids for n in range(steps)],
            )

    def drain(self, steps: int) -> int:
        """Claim and drive queued runs until none is left; the number of runs driven."""
        driven = 0
        claimed, confirm = _CLAIM.rows_before_commit(self.conn, (self._owner,))
        while claimed:
            later, confirm = self._drive(claimed[0], steps, confirm)
            claimed = later.rows()
            driven += 1
        confirm()
        return driven

    def _drive(
        self, claimed: tuple[Any, ...], steps: int, confirm: Callable[[], None]
    ) -> tuple[LaterRows, Callable[[], None]]:
        """Drive one claimed run's steps, each one statement as aifr's lone worker sends it.

        Each step's statement goes through libpq with its rows back before its commit
        (:meth:`PreparedCall.rows_before_commit`, aifr's own path): the next step's
        pre-effect work (its inputs validated and digested) is done while the server
        commits, and the commit is confirmed before the next step's effect, as aifr's
        engine and runtime do. The claim's commit (``confirm``) is confirmed before the
        first step's effect, as aifr's worker confirms its claim. The last step's
        statement claims the next run in its own transaction
        (:meth:`PreparedCall.pair_before_commit`), as aifr's worker claims ahead: the
        next run's claimed row (to read) and the commit's confirmation are returned.
        """
        run_id, epoch = claimed
        for n in range(steps):
            digest = self._governance.step_digest(n)
            confirm()  # the claim, or the previous step, is durable before this one acts
            invocation = self._governance.invoke(time.perf_counter(), digest, run_id, f"s{n}")
            params = (
                run_id,
                f"s{n}",
                str(epoch),
                CANONICAL.encode(invocation.output),
                "t" if n == steps - 1 else "f",
                os.urandom(8).hex(),
                invocation.event,
                invocation.decision,
                invocation.rule,
                invocation.inputs_digest,
                invocation.request_id,
                invocation.details,
            )
            if n < steps - 1:
                _, confirm = _STEP_CALL.rows_before_commit(self.conn, params)
        _, next_claimed, confirm = _STEP_CALL.pair_before_commit(
            self.conn, params, _CLAIM, (self._owner,)
        )
        return next_claimed, confirm

    def close(self) -> None:
        """Close the connection; drop the floor's schema if this one created it."""
        if self._created:
            self.conn.execute(
                sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(self._schema))
            )
        self.conn.close()
