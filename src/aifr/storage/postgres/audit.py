"""``PostgresAuditStore``: the audit chain, checkpoints and cursors in PostgreSQL.

For deployments where many workers on many machines share one ledger. Writers serialize
on one lock row (``SELECT ... FOR UPDATE`` on ``aifr_audit_head``) and then read the
head from the records themselves, inside the same transaction, so every worker extends
one chain and a truncated tail is not papered over by a cached head. ``psycopg`` is
imported on first use (the ``pg`` extra); nothing connects at import time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

from aifr.audit import AuditLedger, AuditRecord, ChainBuilder, ChainHead, Checkpoint, random_hex
from aifr.audit.ledger import PreparedEvent
from aifr.audit.record import GENESIS_HASH, seq_of_record_id, utc_timestamp
from aifr.errors import AuditError, ConfigError, ErrorCode, StorageError
from aifr.storage.audit_rows import (
    AUDIT_COLUMNS,
    audit_row,
    event_columns,
    page_records,
    record_from_row,
    scan_query,
)
from aifr.storage.postgres.database import check_dsn, create_schema

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "APPEND_CALL",
    "AUDIT_SCHEMA_VERSION",
    "STEPS_APPEND_CALL",
    "PostgresAuditStore",
    "append_fields",
    "appended_records",
    "open_postgres_ledger",
    "record_fields",
    "text_array",
]

AUDIT_SCHEMA_VERSION: Final = 7
"""The audit tables' schema version (``schema_versions``, component ``audit``).

1: the tables. 2: the server functions :data:`APPEND_FUNCTION`, ``aifr_audit_append_linked``,
:data:`STEP_DONE_FUNCTION` and :data:`GUARD_FUNCTION` (PostgreSQL only;
SQLite appends in its own process and has no counterpart). 3: :data:`STEP_ENDS_RUN_FUNCTION`
and :data:`RUN_SAVED_FUNCTION`, and :data:`STEP_DONE_FUNCTION` writing the step's row once.
4: :data:`STEPS_APPEND_FUNCTION`, a batch's tail writing its steps' rows once, in place of
``aifr_audit_append_linked`` (which set only ``audit_id``; a database made before version 4
keeps it, unused, for a worker of version 3 not yet restarted, and a new one never has it).
5: :data:`STEPS_APPEND_FUNCTION` as ``aifr_audit_append_fenced_steps``, which also locks
the steps' rows under their fences, and :data:`STEP_DONE_FUNCTION` taking the record's 14
fields as parameters of their own, not one ``text[]`` (a database made before version 5
keeps ``aifr_audit_append_steps`` and the 13-argument ``aifr_step_done``, unused, for a
worker of version 4 not yet restarted). 6: :data:`STEP_ENDS_RUN_FUNCTION` appending its
records inline, not through ``aifr_audit_append`` (same arguments and rows). 7:
:data:`STEP_RECORDED_FUNCTION`, a lone step's function answering one text.
"""

CHAIN_HEAD_SQL: Final = """\
    PERFORM 1 FROM aifr_audit_head WHERE id = 1 FOR UPDATE;
    SELECT seq, hash INTO v_seq, v_prev FROM aifr_audit_records ORDER BY seq DESC LIMIT 1;
    IF NOT FOUND THEN
        v_seq := 0;
        v_prev := repeat('0', 64);
    END IF;
    v_ts := to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');"""
"""The chain's lock, its head (``v_seq``, ``v_prev``) and the batch's time (``v_ts``).

PL/pgSQL for the server functions that append records inline (see
:func:`append_record_sql`); they declare ``v_seq``, ``v_prev`` and ``v_ts``.
"""


def append_record_sql(fields: str, function: str) -> str:
    """PL/pgSQL appending the ``i``-th record of the ``text[]`` named ``fields``, inline.

    The one text of the append that :data:`APPEND_FUNCTION`, :data:`STEP_ENDS_RUN_FUNCTION`
    and the workflow claim (``aifr_claim_run``) run inside their loops over ``i``, after
    :data:`CHAIN_HEAD_SQL`: the seq, the id ``au-<seq>-<random part>``, the check that
    they need no JSON escapes (``AF002``, naming ``function``), the hash exactly as
    :func:`aifr.audit.record.chain_hash` makes it, and the insert. Leaves the record's
    id and hash in ``v_id`` and ``v_hash``; the caller moves ``v_prev`` on. A nested call
    of the append function cost the server about 65 µs more than the same body inline.
    """
    at = [f"{fields}[v_at + {n}]" for n in range(1, 15)]
    return f"""\
        v_at := i * 14;
        v_seq := v_seq + 1;
        v_id := 'au-' || v_seq || '-' || {at[0]};
        IF (v_id || v_ts || v_prev) !~ '^[-0-9A-Za-z:.]+$' THEN
            RAISE EXCEPTION '{function}: % needs JSON escapes', v_id USING ERRCODE = 'AF002';
        END IF;
        v_hash := encode(sha256(convert_to(
            '{{"event":' || {at[1]} || ',"id":"' || v_id || '","prev_hash":"'
            || v_prev || '","seq":' || v_seq || ',"ts":"' || v_ts || '"}}', 'UTF8')), 'hex');
        INSERT INTO aifr_audit_records (seq, id, ts, kind, principal, capability_id,
            capability_fingerprint, decision, rule_id, inputs_digest, outcome, trace_id,
            request_id, run_id, details, prev_hash, hash)
        VALUES (v_seq, v_id, v_ts, {", ".join(at[2:])}, v_prev, v_hash);"""  # noqa: S608  # constant PL/pgSQL


APPEND_FUNCTION: Final = f"""
CREATE OR REPLACE FUNCTION aifr_audit_append(fields text[])
RETURNS TABLE (r_seq bigint, r_id text, r_ts text, r_prev text, r_hash text)
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
    v_prev text;
    v_ts text;
    v_id text;
    v_hash text;
    v_at integer;
BEGIN
{CHAIN_HEAD_SQL}
    FOR i IN 0 .. coalesce(array_length(fields, 1), 0) / 14 - 1 LOOP
{append_record_sql("fields", "aifr_audit_append")}
        r_seq := v_seq;
        r_id := v_id;
        r_ts := v_ts;
        r_prev := v_prev;
        r_hash := v_hash;
        RETURN NEXT;
        v_prev := v_hash;
    END LOOP;
END
$$
"""
"""Append a batch of records to the chain in one call, the chain's lock held server-side.

Locks ``aifr_audit_head``, reads the head, and per record computes the seq, the id
``au-<seq>-<random part>``, the time (the server's clock, once per call, as the ledger
takes one time per batch) and the hash exactly as :func:`aifr.audit.record.chain_hash`
does (the document spliced around the event's canonical JSON; ids, times and hashes made
here never need JSON escapes, which it checks), inserts the records and returns seq, id,
time, previous hash and hash of each, in order. A test pins the hash to ``chain_hash``.
The lock is released by the caller's commit, sent right after this call, so no client
round trip happens while the chain is locked.
"""

STEPS_APPEND_FUNCTION: Final = """
CREATE OR REPLACE FUNCTION aifr_audit_append_fenced_steps(
    fields text[], link_at integer[], link_run text[], link_step text[],
    link_attempt integer[], link_output text[], link_digest text[], link_result text[],
    link_finished double precision[], link_fence integer[], link_refused text[])
RETURNS TABLE (r_seq bigint, r_id text, r_ts text, r_prev text, r_hash text)
LANGUAGE plpgsql AS $$
DECLARE
    v_ids text[] := '{}';
BEGIN
    FOR i IN 1 .. coalesce(array_length(link_at, 1), 0) LOOP
        CONTINUE WHEN link_refused[i] IS NULL;  -- its job locked it already
        PERFORM 1 FROM wf_steps
        WHERE run_id = link_run[i] AND step_id = link_step[i] AND (
            link_fence[i] IS NULL OR EXISTS (SELECT 1 FROM wf_runs
                WHERE id = link_run[i] AND lease_epoch = link_fence[i] FOR SHARE))
        FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'AF001', MESSAGE = link_refused[i],
                DETAIL = link_run[i];
        END IF;
    END LOOP;
    FOR r_seq, r_id, r_ts, r_prev, r_hash IN SELECT * FROM aifr_audit_append(fields) LOOP
        v_ids := v_ids || r_id;
        RETURN NEXT;
    END LOOP;
    FOR i IN 1 .. coalesce(array_length(link_at, 1), 0) LOOP
        UPDATE wf_steps SET state = 'completed', attempt = link_attempt[i],
            output = link_output[i], error = NULL, request_digest = link_digest[i],
            result = link_result[i], finished_at = link_finished[i], next_attempt_at = NULL,
            audit_id = v_ids[link_at[i]]
        WHERE run_id = link_run[i] AND step_id = link_step[i];
    END LOOP;
END
$$
"""
"""A batch's audit tail (one statement): the steps' rows locked, the records, the rows written.

First each completed step's row whose job left it unlocked (``link_refused`` names the
refusal; ``NULL``: the job locked it) is locked under its fence (``FOR UPDATE``, the
run's row ``FOR SHARE`` at epoch ``link_fence``, refused with ``AF001``), in the links'
order, which is the batch's run-id order; then ``aifr_audit_append`` takes the chain's
lock, last; then each step's row is written once, its result with its record's id (one
new version of the wide row per step: writing the result in the job and ``audit_id``
here cost a second version of each, 6,185 updates for 3,160 steps at ``--concurrency
8``).

A batch's first attempt leaves its steps' rows to be locked here: locking each in its
own statement cost the client a pipelined statement a step (5% to 8% of a step's client
CPU at ``--concurrency 8``, measured in alternating rounds) and the server a statement
to parse and run, for a lock that is taken just as well here, before the chain's. A refusal here aborts the attempt, which the batch then runs again job by job,
each job locking its own row in its own savepoint, so the late step fails alone.
"""

_STEP_PARAMETERS: Final = """\
    p_undo boolean, p_state text, p_attempt integer, p_capability text, p_output text,
    p_digest text, p_result text, p_finished double precision, p_run text, p_step text,
    p_fence integer, p_refused text, f_random text, f_event text, f_kind text,
    f_principal text, f_capability text, f_fingerprint text, f_decision text, f_rule text,
    f_digest text, f_outcome text, f_trace text, f_request text, f_run text, f_details text"""
"""The parameters of a lone step's function: the step's fenced result, then its record."""

_STEP_BODY: Final = """\
    IF p_undo THEN
        UPDATE wf_steps SET state = p_state, undo_attempt = p_attempt,
            undo_capability = p_capability, undo_output = p_output, undo_error = NULL,
            undo_digest = p_digest, undo_result = p_result, finished_at = p_finished
        WHERE run_id = p_run AND step_id = p_step AND (p_fence IS NULL OR EXISTS (
            SELECT 1 FROM wf_runs WHERE id = p_run AND lease_epoch = p_fence FOR SHARE));
    ELSE  -- locked now, written once below with its record's id (one tuple version)
        PERFORM 1 FROM wf_steps
        WHERE run_id = p_run AND step_id = p_step AND (p_fence IS NULL OR EXISTS (
            SELECT 1 FROM wf_runs WHERE id = p_run AND lease_epoch = p_fence FOR SHARE))
        FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'AF001', MESSAGE = p_refused, DETAIL = p_run;
    END IF;
    -- aifr_audit_append for this one record, inline (a nested call cost more than it)
    PERFORM 1 FROM aifr_audit_head WHERE id = 1 FOR UPDATE;
    SELECT seq, hash INTO r_seq, r_prev FROM aifr_audit_records ORDER BY seq DESC LIMIT 1;
    IF NOT FOUND THEN
        r_seq := 0;
        r_prev := repeat('0', 64);
    END IF;
    r_ts := to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    r_seq := r_seq + 1;
    r_id := 'au-' || r_seq || '-' || f_random;
    IF (r_id || r_ts || r_prev) !~ '^[-0-9A-Za-z:.]+$' THEN
        RAISE EXCEPTION 'aifr_step_done: % needs JSON escapes', r_id USING ERRCODE = 'AF002';
    END IF;
    r_hash := encode(sha256(convert_to(
        '{"event":' || f_event || ',"id":"' || r_id || '","prev_hash":"'
        || r_prev || '","seq":' || r_seq || ',"ts":"' || r_ts || '"}', 'UTF8')), 'hex');
    INSERT INTO aifr_audit_records (seq, id, ts, kind, principal, capability_id,
        capability_fingerprint, decision, rule_id, inputs_digest, outcome, trace_id,
        request_id, run_id, details, prev_hash, hash)
    VALUES (r_seq, r_id, r_ts, f_kind, f_principal, f_capability, f_fingerprint, f_decision,
        f_rule, f_digest, f_outcome, f_trace, f_request, f_run, f_details,
        r_prev, r_hash);
    IF NOT p_undo THEN
        UPDATE wf_steps SET state = p_state, attempt = p_attempt, output = p_output,
            error = NULL, request_digest = p_digest, result = p_result,
            finished_at = p_finished, next_attempt_at = NULL, audit_id = r_id
        WHERE run_id = p_run AND step_id = p_step;
    END IF;
"""
"""What a lone step's function does, into ``r_seq``, ``r_id``, ``r_ts``, ``r_prev``, ``r_hash``."""

STEP_DONE_FUNCTION: Final = f"""
CREATE OR REPLACE FUNCTION aifr_step_done(
{_STEP_PARAMETERS})
RETURNS TABLE (r_seq bigint, r_id text, r_ts text, r_prev text, r_hash text)
LANGUAGE plpgsql AS $$
BEGIN
{_STEP_BODY}    RETURN NEXT;
END
$$
"""
"""A step's (or its compensation's) fenced result and its audit record: one statement.

What a lone writer's step transaction does, in the same lock order (the step row under
the run's ``FOR SHARE`` fence, then the chain's lock, last), sent as one statement in
autocommit: one round trip, no ``BEGIN``/``COMMIT``, and the chain's lock is held from
the append to the statement's own commit. A step's row is locked first (``FOR UPDATE``,
fenced) and written once, at the end, with its record's id: writing it before the
chain's lock and again for ``audit_id`` cost the server a second version of the wide
row (about 50 µs of its CPU a step, measured in alternating blocks of calls). A
compensation's row names no record, so it is written before the chain's lock. A refused
write raises ``AF001`` before anything is appended; the statement's transaction rolls
back whole. The append is :data:`APPEND_FUNCTION`'s, inlined for one record (the nested
call cost the server about as much as the statements it saved); tests verify its hash
against ``chain_hash``. The record comes as its 14 fields (:func:`record_fields`), each a
parameter: one ``text[]`` cost the client an array literal to build (6.7 µs a step,
against 0.9 µs for the fields) and the server one to parse.
"""

STEP_RECORDED_FUNCTION: Final = f"""
CREATE OR REPLACE FUNCTION aifr_step_recorded(
{_STEP_PARAMETERS})
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    r_seq bigint;
    r_id text;
    r_ts text;
    r_prev text;
    r_hash text;
BEGIN
{_STEP_BODY.replace("'aifr_step_done: ", "'aifr_step_recorded: ")}\
    RETURN r_seq || ' ' || r_id || ' ' || r_ts || ' ' || r_prev || ' ' || r_hash;
END
$$
"""
""":data:`STEP_DONE_FUNCTION` answering one text, not a set: what a lone step now calls.

The record's seq, id, time, previous hash and hash, separated by spaces (none of them
can hold one: the function refuses an id, time or hash that is not plain, ``AF002``).
A set-returning function is read by the server as a function scan over a result it
materializes first: the same call answering one value cost the server about 9 µs less
(measured on the backend's CPU, 6,600 calls of each in alternating blocks). The set's
form stays, unused by this version, for a worker of version 6 not yet restarted.
"""

STEP_ENDS_RUN_FUNCTION: Final = f"""
CREATE OR REPLACE FUNCTION aifr_step_ends_run(
    p_attempt integer, p_output text, p_digest text, p_result text,
    p_finished double precision, p_run text, p_step text, p_fence integer, p_refused text,
    p_state text, p_fingerprints text, p_error text, p_failed_step text,
    p_cancel integer, p_updated double precision, p_owner text, p_run_fence integer,
    fields text[])
RETURNS TABLE (r_seq bigint, r_id text, r_ts text, r_prev text, r_hash text)
LANGUAGE plpgsql AS $$
DECLARE
    v_first text;
    v_records integer := coalesce(array_length(fields, 1), 0) / 14;
    v_at integer;
    v_seq bigint;
    v_prev text;
    v_ts text;
    v_id text;
    v_hash text;
BEGIN
    PERFORM 1 FROM wf_steps
    WHERE run_id = p_run AND step_id = p_step AND (p_fence IS NULL OR EXISTS (
        SELECT 1 FROM wf_runs WHERE id = p_run AND lease_epoch = p_fence FOR SHARE))
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'AF001', MESSAGE = p_refused, DETAIL = p_run;
    END IF;
    UPDATE wf_runs SET state = p_state, fingerprints = p_fingerprints, error = p_error,
        failed_step = p_failed_step, cancel_requested = p_cancel, updated_at = p_updated,
        lease_owner = NULL, lease_expires_at = NULL
    WHERE id = p_run AND (lease_owner IS NULL OR lease_owner = p_owner)
        AND (p_run_fence IS NULL OR lease_epoch = p_run_fence);
    IF NOT FOUND THEN  -- the run's end is not ours to write: the step's record alone
        v_records := 1;
    END IF;
    -- aifr_audit_append for these records, inline (a nested call cost more than it)
{CHAIN_HEAD_SQL}
    FOR i IN 0 .. v_records - 1 LOOP
{append_record_sql("fields", "aifr_step_ends_run")}
        v_first := coalesce(v_first, v_id);
        r_seq := v_seq;
        r_id := v_id;
        r_ts := v_ts;
        r_prev := v_prev;
        r_hash := v_hash;
        RETURN NEXT;
        v_prev := v_hash;
    END LOOP;
    UPDATE wf_steps SET state = 'completed', attempt = p_attempt, output = p_output,
        error = NULL, request_digest = p_digest, result = p_result,
        finished_at = p_finished, next_attempt_at = NULL, audit_id = v_first
    WHERE run_id = p_run AND step_id = p_step;
END
$$
"""  # noqa: S608  # constant PL/pgSQL
"""A run's last step and the run's end: one statement (what a lone writer's transaction did).

The step's row locked under its fence (refused with ``AF001``, as
:data:`STEP_DONE_FUNCTION` does), then the run's end (completed, lease released) if
``p_owner`` still holds the lease at epoch ``p_run_fence``, then both audit records (the
step's, then the run's end; the step's alone when the end was not written) under the
chain's lock, last, appended as :data:`APPEND_FUNCTION` appends them but inline (called
as a function, the append cost the server about 65 µs more a run's end, in alternating
calls under ``EXPLAIN ANALYZE``), and the step's result written once, with its record's
id. A run end that matches nothing is not an error: the step
still commits, as the transaction's savepoint let it, and the caller learns it from the
one record returned. One round trip and one statement instead of three waits and seven
statements (``BEGIN``, the step, a savepoint, the run, its release, the append,
``COMMIT``).
"""

RUN_SAVED_FUNCTION: Final = """
CREATE OR REPLACE FUNCTION aifr_run_saved(
    p_run text, p_state text, p_fingerprints text, p_error text, p_failed_step text,
    p_cancel integer, p_updated double precision, p_lease_owner text,
    p_lease_expires double precision, p_owner text, p_fence integer, p_refused text,
    fields text[])
RETURNS TABLE (r_seq bigint, r_id text, r_ts text, r_prev text, r_hash text)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE wf_runs SET state = p_state, fingerprints = p_fingerprints, error = p_error,
        failed_step = p_failed_step, cancel_requested = p_cancel, updated_at = p_updated,
        lease_owner = p_lease_owner, lease_expires_at = p_lease_expires
    WHERE id = p_run AND (p_owner IS NULL OR lease_owner IS NULL OR lease_owner = p_owner)
        AND (p_fence IS NULL OR lease_epoch = p_fence);
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'AF001', MESSAGE = p_refused, DETAIL = p_run;
    END IF;
    RETURN QUERY SELECT * FROM aifr_audit_append(fields);
END
$$
"""
"""A run's own change (its state, no steps) and its audit record: one statement.

The fenced run update a lone writer's save sent in a transaction (refused with
``AF001`` when another worker holds the lease), then the record through
:data:`APPEND_FUNCTION` under the chain's lock, last, and the statement's own commit: one
round trip and one statement instead of ``BEGIN``, the update, the append and ``COMMIT``
(a worker's ``started``, once a run, cost the client about 300 µs that way).
"""

GUARD_FUNCTION: Final = """
CREATE OR REPLACE FUNCTION aifr_require_one(written bigint, message text, run_id text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF written <> 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'AF001', MESSAGE = message, DETAIL = run_id;
    END IF;
END
$$
"""
"""Refuse a fenced write that matched no row, inside the transaction (SQLSTATE ``AF001``).

A fenced write calls it on its own row count (a data-modifying CTE), so the refusal
aborts the transaction on the server: the client needs no answer before it sends the
audit tail and ``COMMIT``, and the tail is rolled back with the refused write.
:func:`aifr.storage.postgres.database.translate_pg_errors` turns it into
``workflow.lease_lost``.
"""

_DDL: Final = (
    """
    CREATE TABLE IF NOT EXISTS aifr_audit_records (
        seq BIGINT PRIMARY KEY,
        id TEXT NOT NULL,
        ts TEXT NOT NULL,
        kind TEXT NOT NULL,
        principal TEXT NOT NULL,
        capability_id TEXT,
        capability_fingerprint TEXT,
        decision TEXT,
        rule_id TEXT,
        inputs_digest TEXT,
        outcome TEXT,
        trace_id TEXT,
        request_id TEXT,
        run_id TEXT,
        details TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS aifr_audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1)
    )
    """,
    "INSERT INTO aifr_audit_head (id) VALUES (1) ON CONFLICT DO NOTHING",
    """
    CREATE TABLE IF NOT EXISTS aifr_audit_checkpoints (
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL,
        ts TEXT NOT NULL,
        public_key TEXT NOT NULL,
        signature TEXT NOT NULL,
        PRIMARY KEY (seq, public_key)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS aifr_audit_outbox_cursors (
        sink TEXT PRIMARY KEY,
        shipped_seq BIGINT NOT NULL,
        updated_at TEXT NOT NULL
    )
    """,
)
APPEND_CALL: Final = "SELECT r_seq, r_id, r_ts, r_prev, r_hash FROM aifr_audit_append(%s)"
"""One statement appending a batch: its argument is :func:`append_fields`' list."""

STEPS_APPEND_CALL: Final = (
    "SELECT r_seq, r_id, r_ts, r_prev, r_hash FROM aifr_audit_append_fenced_steps("
    "%s::text[], %s::integer[], %s::text[], %s::text[], %s::integer[], %s::text[], "
    "%s::text[], %s::text[], %s::double precision[], %s::integer[], %s::text[])"
)
""":data:`APPEND_CALL` that also locks and writes completed steps' rows (array literals,
:func:`text_array`): fields, then per step its 1-based record number, run id, step id,
attempt, output, request digest, result, finish time, lease epoch (its fence) and the
refusal's message (``NULL``: its job locked the row)."""


def text_array(values: Iterable[str | int | None]) -> str:
    """A PostgreSQL array literal of ``values`` (``NULL`` for ``None``), for ``%s::text[]``.

    Built here rather than passing a list: psycopg's list dumper escapes every element
    with a regular expression in Python, which cost a step more CPU than the rest of
    its statement. Inside double quotes only the backslash and the double quote need
    escaping.
    """
    return (
        "{"
        + ",".join(
            "NULL"
            if value is None
            else '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
            for value in values
        )
        + "}"
    )


def record_fields(prepared: PreparedEvent) -> tuple[str | None, ...]:
    """One record's 14 fields, as the server functions take them.

    The id's random part, the event's canonical JSON, the 11 event columns and the
    details' JSON: :data:`STEP_DONE_FUNCTION`'s last 14 parameters, and each record's
    run of :func:`append_fields`.
    """
    event, event_json, details_json = prepared
    return (
        random_hex(8),  # the id's random part, as new_record_id makes it
        event_json,
        *event_columns(event),
        details_json,
    )


def append_fields(prepared: Sequence[PreparedEvent]) -> str:
    """The one ``text[]`` argument of :data:`APPEND_FUNCTION` for these events, in order.

    Per record its :func:`record_fields`, all in one array literal (see
    :func:`text_array`).
    """
    return text_array(field for item in prepared for field in record_fields(item))


def appended_records(
    prepared: Sequence[PreparedEvent], rows: Sequence[Sequence[Any]]
) -> list[AuditRecord]:
    """The records :data:`APPEND_CALL` wrote, from its rows (seq, id, ts, prev, hash).

    The rows may be psycopg's (seq an ``int``) or a :class:`PreparedCall`'s (all text).

    Raises:
        StorageError: the call returned another number of records than it was given.
    """
    if len(rows) != len(prepared):
        raise StorageError("the audit chain returned a different number of records")
    return [
        AuditRecord(int(row[0]), row[1], row[2], row[3], row[4], event, details_json)
        for (event, _, details_json), row in zip(prepared, rows, strict=True)
    ]


_INSERT: Final = (
    f"INSERT INTO aifr_audit_records ({AUDIT_COLUMNS}) "  # noqa: S608  # constant column list
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_HEAD: Final = "SELECT seq, hash FROM aifr_audit_records ORDER BY seq DESC LIMIT 1"


def _psycopg() -> Any:
    try:
        import psycopg  # imported on first use: only PostgreSQL deployments install it
    except ImportError as exc:
        raise ConfigError(
            "a postgresql:// database_url needs the pg extra: pip install 'aifr[pg]'",
            code=ErrorCode.CONFIG_MISSING_EXTRA,
            extra="pg",
        ) from exc
    return psycopg


@contextmanager
def _translate(action: str) -> Iterator[None]:
    """Turn psycopg errors raised inside the block into ``StorageError`` naming ``action``."""
    error: type[Exception] = _psycopg().Error
    try:
        yield
    except error as exc:
        raise StorageError(f"{action} failed: {exc}", action=action) from exc


class PostgresAuditStore:
    """The :class:`~aifr.audit.AuditStore` port over PostgreSQL.

    ``schema`` puts the tables in that schema (created if missing), so several projects
    or test runs can share one database.
    """

    def __init__(self, dsn: str, *, schema: str | None = None) -> None:
        check_dsn(dsn)
        self._dsn = dsn
        self._schema = schema
        self._local = threading.local()
        self._all: list[psycopg.Connection[tuple[Any, ...]]] = []
        self._all_lock = threading.Lock()
        self._migrate()

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn: psycopg.Connection[tuple[Any, ...]] | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn
        psycopg = _psycopg()
        with _translate("connecting to PostgreSQL"):
            conn = psycopg.connect(self._dsn, autocommit=True)
            if self._schema is not None:
                identifier = psycopg.sql.Identifier(self._schema)
                create_schema(conn, self._schema)
                conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(identifier))
        self._local.conn = conn
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _migrate(self) -> None:
        conn = self._connect()
        with _translate("creating the audit tables"), conn.transaction():
            # Two processes creating the tables at once would collide in the catalog.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('aifr_schema_versions'))")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_versions ("
                "component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            row = conn.execute(
                "SELECT version FROM schema_versions WHERE component = 'audit'"
            ).fetchone()
            if row is not None and row[0] > AUDIT_SCHEMA_VERSION:
                raise StorageError(
                    f"PostgreSQL schema {self._schema or 'public'}: 'audit' is at version "
                    f"{row[0]}, newer than this aifr knows ({AUDIT_SCHEMA_VERSION}); "
                    "upgrade aifr",
                    code=ErrorCode.STORAGE_SCHEMA_MISMATCH,
                    component="audit",
                )
            if row is not None and row[0] == AUDIT_SCHEMA_VERSION:
                return
            for statement in (
                *_DDL,
                APPEND_FUNCTION,
                STEPS_APPEND_FUNCTION,
                STEP_DONE_FUNCTION,
                STEP_RECORDED_FUNCTION,
                STEP_ENDS_RUN_FUNCTION,
                RUN_SAVED_FUNCTION,
                GUARD_FUNCTION,
            ):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_versions (component, version) VALUES ('audit', %s) "
                "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (AUDIT_SCHEMA_VERSION,),
            )

    def _append(
        self, conn: psycopg.Connection[tuple[Any, ...]], build: ChainBuilder
    ) -> list[AuditRecord]:
        conn.execute("SELECT id FROM aifr_audit_head WHERE id = 1 FOR UPDATE")
        row = conn.execute(_HEAD).fetchone()
        records = build(
            ChainHead(row[0], row[1]) if row is not None else ChainHead(0, GENESIS_HASH)
        )
        with conn.cursor() as cursor:
            cursor.executemany(_INSERT, [audit_row(r) for r in records])
        return records

    def append(self, build: ChainBuilder) -> list[AuditRecord]:
        """Lock the chain, read the head, insert ``build(head)`` and commit.

        Raises:
            StorageError: PostgreSQL failed (nothing was written).
        """
        conn = self._connect()
        with _translate("appending audit records"), conn.transaction():
            return self._append(conn, build)

    def append_in(self, conn: object, build: ChainBuilder) -> list[AuditRecord]:
        """Like :meth:`append`, inside the caller's open transaction on ``conn``.

        Raises:
            AuditError: ``conn`` is not a psycopg connection inside a transaction.
            StorageError: PostgreSQL failed.
        """
        psycopg = _psycopg()
        status = psycopg.pq.TransactionStatus
        # In pipeline mode libpq reports the transaction's status only at a sync (between
        # syncs it reads ACTIVE or IDLE), so there only a failed transaction is refused.
        if not isinstance(conn, psycopg.Connection) or conn.info.transaction_status not in (
            (status.INTRANS, status.ACTIVE, status.IDLE)
            if conn.info.pipeline_status != psycopg.pq.PipelineStatus.OFF
            else (status.INTRANS,)
        ):
            raise AuditError("append_in needs a psycopg connection inside a transaction")
        with _translate("appending an audit record"):
            return self._append(conn, build)

    def head(self) -> ChainHead:
        """Seq and hash of the newest committed record."""
        with _translate("reading the audit head"):
            row = self._connect().execute(_HEAD).fetchone()
        return ChainHead(row[0], row[1]) if row is not None else ChainHead(0, GENESIS_HASH)

    def scan(
        self,
        *,
        after_seq: int = 0,
        since: str | None = None,
        until: str | None = None,
        principal: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> Iterator[AuditRecord]:
        """Records page by page, in seq order (or reversed), filtered."""
        sql, params = scan_query(
            "aifr_audit_records",
            "%s",
            after_seq=after_seq,
            since=since,
            until=until,
            principal=principal,
            newest_first=newest_first,
        )

        def fetch(position: int, size: int) -> list[tuple[Any, ...]]:
            with _translate("reading audit records"):
                return self._connect().execute(sql, [*params, position, size]).fetchall()

        return page_records(fetch, limit=limit, newest_first=newest_first)

    def get(self, record_id: str) -> AuditRecord | None:
        """The record with id ``record_id``, or ``None``."""
        seq = seq_of_record_id(record_id)
        if seq is None:
            return None
        with _translate("reading an audit record"):
            row = (
                self._connect()
                .execute(
                    f"SELECT {AUDIT_COLUMNS} FROM aifr_audit_records WHERE seq = %s AND id = %s",  # noqa: S608  # constant column list
                    (seq, record_id),
                )
                .fetchone()
            )
        return record_from_row(row) if row is not None else None

    def seq_of_hash(self, record_hash: str) -> int | None:
        """The lowest seq whose stored hash is ``record_hash``."""
        with _translate("searching the audit chain"):
            row = (
                self._connect()
                .execute("SELECT MIN(seq) FROM aifr_audit_records WHERE hash = %s", (record_hash,))
                .fetchone()
            )
        return int(row[0]) if row is not None and row[0] is not None else None

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Keep ``checkpoint`` (the same seq signed twice by one key keeps the first)."""
        with _translate("saving a checkpoint"):
            self._connect().execute(
                "INSERT INTO aifr_audit_checkpoints (seq, hash, ts, public_key, signature) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    checkpoint.seq,
                    checkpoint.hash,
                    checkpoint.ts,
                    checkpoint.public_key,
                    checkpoint.signature,
                ),
            )

    def checkpoints(self) -> list[Checkpoint]:
        """Every kept checkpoint, oldest first."""
        with _translate("reading checkpoints"):
            rows = (
                self._connect()
                .execute(
                    "SELECT seq, hash, ts, public_key, signature FROM aifr_audit_checkpoints "
                    "ORDER BY seq, ts"
                )
                .fetchall()
            )
        return [Checkpoint(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def shipped_seq(self, sink: str) -> int:
        """The last seq delivered to ``sink`` (``0`` when none was)."""
        with _translate("reading a shipping cursor"):
            row = (
                self._connect()
                .execute(
                    "SELECT shipped_seq FROM aifr_audit_outbox_cursors WHERE sink = %s", (sink,)
                )
                .fetchone()
            )
        return int(row[0]) if row is not None else 0

    def mark_shipped(self, sink: str, seq: int) -> None:
        """Move ``sink``'s cursor forward to ``seq`` (never back)."""
        with _translate("moving a cursor"):
            self._connect().execute(
                "INSERT INTO aifr_audit_outbox_cursors (sink, shipped_seq, updated_at) "
                "VALUES (%s, %s, %s) ON CONFLICT (sink) DO UPDATE SET "
                "shipped_seq = GREATEST(aifr_audit_outbox_cursors.shipped_seq, "
                "excluded.shipped_seq), updated_at = excluded.updated_at",
                (sink, seq, utc_timestamp()),
            )

    def close(self) -> None:
        """Close every connection this store opened."""
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


def open_postgres_ledger(dsn: str, *, schema: str | None = None) -> AuditLedger:
    """An :class:`~aifr.audit.AuditLedger` over PostgreSQL at ``dsn``.

    Raises:
        ConfigError: psycopg is not installed (the ``pg`` extra).
        StorageError: the database cannot be reached or the tables cannot be created.
    """
    return AuditLedger(PostgresAuditStore(dsn, schema=schema))
