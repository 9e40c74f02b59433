"""Workflow step results recorded by the runtime in PostgreSQL, in the invocation's commit.

The PostgreSQL counterpart of :class:`~aifr.storage.sqlite.step_results.StepResultStore`:
a step key's success marks the step completed (or compensated) and appends the audit
record in one transaction, and other keys go to the ordinary idempotency store.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import JsonValue

from aifr.audit import AuditEvent, AuditRecord
from aifr.errors import StorageError
from aifr.invocation import IdempotencyRecord, IdempotencyStore
from aifr.storage.postgres.audit import append_fields, appended_records, record_fields
from aifr.storage.postgres.database import translate_pg_errors
from aifr.storage.postgres.groupcommit import PendingAudit, StepWrite
from aifr.storage.postgres.prepared_call import PreparedCall
from aifr.storage.postgres.runs import PostgresRunStore, run_change_text
from aifr.storage.run_rows import encode_column, replay_fields
from aifr.workflows.ports import RunRecord, StepKey, StepState

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresStepResultStore"]

_FENCED = (
    " AND (%s::integer IS NULL OR EXISTS "
    "(SELECT 1 FROM wf_runs WHERE id = %s AND lease_epoch = %s FOR SHARE))"
)
"""Write a step's result only while the run's lease epoch is the one the attempt began with.

``FOR SHARE`` holds the run's row until the commit: the audit chain's lock is taken
after this write, and a worker taking the lease over meanwhile (an ``UPDATE`` of the
epoch) waits for the commit instead of slipping in between the check and the commit.
"""

_REFUSED = ") SELECT aifr_require_one(count(*), %s, %s) FROM w"
"""Refuse, on the server, a fenced write that matched nothing (``workflow.lease_lost``).

The refusal aborts the transaction where it happens, so the client sends the audit
tail and ``COMMIT`` without waiting for the write's row count: one round trip a step.
"""

_COMPLETE_UNDO = (
    "WITH w AS (UPDATE wf_steps SET state = %s, undo_attempt = %s, undo_capability = %s, "  # noqa: S608  # constant clauses
    "undo_output = %s, undo_error = NULL, undo_digest = %s, undo_result = %s, "
    "finished_at = %s WHERE run_id = %s AND step_id = %s" + _FENCED + " RETURNING 1" + _REFUSED
)
_LOCK_STEP = (
    "WITH w AS (SELECT 1 FROM wf_steps WHERE run_id = %s AND step_id = %s"  # noqa: S608  # constant clauses
    + _FENCED
    + " FOR UPDATE"
    + _REFUSED
)
"""A completed step's row locked under its fence (refused if the lease moved on).

Its result is written by the batch's audit tail, with its record's id (:class:`StepWrite`):
one version of the row, not one for the result and another for ``audit_id``.
"""
_STEP_DONE = PreparedCall(
    "aifr_step_recorded",
    "SELECT aifr_step_recorded("
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::integer, $12, $13, $14, $15, $16, $17, "
    "$18, $19, $20, $21, $22, $23, $24, $25, $26)",
)
"""A lone writer's whole step: fenced write, refusal, audit record and link (one statement).

Its one value is the record's seq, id, time, previous hash and hash, separated by spaces
(see ``STEP_RECORDED_FUNCTION``)."""

_STEP_ENDS_RUN = PreparedCall(
    "aifr_step_ends_run",
    "SELECT r_seq, r_id, r_ts, r_prev, r_hash FROM aifr_step_ends_run($1, $2, $3, $4, $5, $6, "
    "$7, $8::integer, $9, $10, $11, $12, $13, $14::integer, $15, $16, $17::integer, $18::text[])",
)
"""A lone writer's last step: the step, the run's end if still ours, both records (one statement)."""

_SELECT_STEP_RESULT = (
    "SELECT attempt, request_digest, result, output, finished_at FROM wf_steps "
    "WHERE run_id = %s AND step_id = %s"
)
_SELECT_UNDO_RESULT = (
    "SELECT undo_attempt, undo_digest, undo_result, undo_output, finished_at FROM wf_steps "
    "WHERE run_id = %s AND step_id = %s"
)


def _record_rows(rows: Sequence[Sequence[str | None]]) -> list[tuple[str, ...]]:
    """``aifr_step_recorded``'s one value as the record's row: seq, id, time, previous, hash.

    Raises:
        StorageError: the function answered something else (no row, or not five parts).
    """
    parts = tuple(rows[0][0].split(" ")) if len(rows) == 1 and rows[0][0] else ()
    if len(parts) != 5:
        raise StorageError(f"a step's record came back malformed: {rows!r}")
    return [parts]


def _refusal(parsed: StepKey) -> str:
    """The error a step's late result gets when the database refuses it (``AF001``)."""
    return (
        f"run {parsed.run_id}: step {parsed.step_id!r} finished after the lease was taken "
        "over; the database refused the late result"
    )


class _Foreseen(NamedTuple):
    """A step's completion prepared before its effect (see :meth:`PostgresStepResultStore.foresee`)."""

    principal: str
    key: str
    result: dict[str, JsonValue]
    """The very object ``complete`` must be handed for the rest to apply."""
    parsed: StepKey
    stored: str | None
    """``result`` as the step's row keeps it (its output apart): encoded already."""
    refused: str


class _ForeseenSlot(threading.local):
    """The completion this thread prepared last, taken by its next ``complete``."""

    foreseen: _Foreseen | None = None


class PostgresStepResultStore:
    """The runtime's ``IdempotencyStore`` port: step keys complete their step in one commit."""

    def __init__(self, runs: PostgresRunStore, fallback: IdempotencyStore) -> None:
        self._runs = runs
        self._fallback = fallback
        self._digests: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._foreseen = _ForeseenSlot()

    def get(self, principal: str, key: str) -> IdempotencyRecord | None:
        """A completed step's stored result for this exact attempt, or ``None``."""
        parsed = StepKey.parse(key)
        if parsed is None:
            return self._fallback.get(principal, key)
        if self._runs.is_unrecorded(key):  # the lease holder knows: no read needed
            return None
        query = _SELECT_UNDO_RESULT if parsed.is_undo else _SELECT_STEP_RESULT
        with translate_pg_errors("reading a step result"), self._runs.database.connection() as c:
            row = c.execute(query, (parsed.run_id, parsed.step_id)).fetchone()
        if row is None or row[2] is None or row[0] != parsed.attempt:
            return None
        result = json.loads(row[2])
        result["output"] = json.loads(row[3]) if row[3] is not None else None
        return IdempotencyRecord(
            principal=principal,
            key=key,
            request_digest=row[1],
            created_at=row[4] or 0.0,
            result=result,
            completed_at=row[4],
        )

    def claim(
        self, principal: str, key: str, request_digest: str, now: float
    ) -> IdempotencyRecord | None:
        """Note the digest for :meth:`complete`; the lease makes the claim exclusive."""
        if StepKey.parse(key) is None:
            return self._fallback.claim(principal, key, request_digest, now)
        with self._lock:
            self._digests[(principal, key)] = request_digest
        return None

    def foresee(self, principal: str, key: str, result: dict[str, JsonValue]) -> None:
        """Encode what ``complete`` will store of ``result`` now, before the step's effect.

        The runtime calls this while the previous step's commit flushes (see
        :class:`~aifr.invocation.ports.ForeseesCompletions`): the stored result (all of
        it but the output, which the row keeps apart), the key's parts and the refusal's
        text are then ready when the step's effect is done, and only the output and
        the record are left to encode before the step's statement. A key that names no
        step is the fallback store's, which prepares nothing.
        """
        parsed = StepKey.parse(key)
        if parsed is None:
            return
        stored = encode_column(replay_fields(result))  # as SQLite keeps it: no defaults
        self._foreseen.foreseen = _Foreseen(
            principal, key, result, parsed, stored, _refusal(parsed)
        )

    def _take_foreseen(
        self, principal: str, key: str, result: dict[str, JsonValue]
    ) -> _Foreseen | None:
        """This thread's completion prepared for ``result`` itself, if that is the one foreseen.

        The slot is emptied either way: a completion foreseen and not taken (the step
        failed, or ended some other way) is never taken later.
        """
        slot = self._foreseen
        foreseen = slot.foreseen
        if foreseen is None:
            return None
        slot.foreseen = None
        if foreseen.result is not result or foreseen.key != key or foreseen.principal != principal:
            return None
        return foreseen

    def complete(
        self,
        principal: str,
        key: str,
        result: dict[str, JsonValue],
        now: float,
        audit: AuditEvent,
    ) -> AuditRecord:
        """Mark the step (or its compensation) done and append the audit record, at once."""
        foreseen = self._take_foreseen(principal, key, result)
        if foreseen is not None:
            parsed, stored, refused = foreseen.parsed, foreseen.stored, foreseen.refused
        else:
            found = StepKey.parse(key)
            if found is None:
                return self._fallback.complete(principal, key, result, now, audit)
            parsed = found
            stored = encode_column(replay_fields(result))  # as SQLite keeps it: no defaults
            refused = _refusal(parsed)
        with self._lock:
            request_digest = self._digests.pop((principal, key), None)
        fence = self._runs.fence(key)
        # Redacted and encoded here, not in the transaction: a bad event fails alone,
        # before any batch, and a batch's job only queues its record for the tail.
        prepared = self._runs.ledger.prepare(audit)
        output = encode_column(result.get("output"))

        def complete_in(
            conn: psycopg.Connection[tuple[Any, ...]],
        ) -> tuple[PendingAudit, RunRecord | None]:
            # The fenced write (or lock) first, the audit record last (under the chain's
            # lock; a completed step's row is written there, with its record's id, and in
            # a batch's first attempt locked there too, fenced, before the chain). A
            # refused write raises on the server (workflow.lease_lost) and aborts the
            # transaction, audit record included: no answer is awaited in between.
            # The row, its fence and the refusal: the last parameters of both statements.
            fenced_row = (
                parsed.run_id,
                parsed.step_id,
                fence,
                parsed.run_id,
                fence,
                refused,
                parsed.run_id,
            )
            if parsed.is_undo:
                conn.execute(
                    _COMPLETE_UNDO,
                    (
                        StepState.COMPENSATED.value,
                        parsed.attempt,
                        result.get("capability_id"),
                        output,
                        request_digest,
                        stored,
                        now,
                        *fenced_row,
                    ),
                )
                return self._runs.group.prepared_later(prepared), None
            step = StepWrite(
                parsed.run_id, parsed.step_id, parsed.attempt, output, request_digest, stored, now
            )
            if self._runs.group.tail_locks:  # the batch's tail locks the row, fenced
                step = step._replace(fence=fence, refused=refused)
            else:
                conn.execute(_LOCK_STEP, fenced_row)
            pending = self._runs.group.prepared_later(prepared, step)
            return pending, self._runs.finish_in(conn, key, now)

        # What both one-statement functions write to the step, in their parameters' order.
        written = (
            output,
            request_digest,
            stored,
            repr(now),
            parsed.run_id,
            parsed.step_id,
            None if fence is None else str(fence),
            refused,
        )

        def complete_alone(
            conn: psycopg.Connection[tuple[Any, ...]],
        ) -> tuple[PendingAudit, RunRecord | None]:
            # Alone: the same writes and record in one statement (aifr_step_done), sent
            # through libpq (see prepared_call: half psycopg's client CPU per statement).
            capability = result.get("capability_id")
            rows = self._rows(
                _STEP_DONE,
                conn,
                (
                    "t" if parsed.is_undo else "f",
                    (StepState.COMPENSATED if parsed.is_undo else StepState.COMPLETED).value,
                    str(parsed.attempt),
                    None if capability is None else str(capability),
                    *written,
                    *record_fields(prepared),
                ),
            )
            pending = PendingAudit(prepared, None)
            pending.resolve(appended_records([prepared], _record_rows(rows))[0])
            return pending, None

        def complete_ending_alone(
            conn: psycopg.Connection[tuple[Any, ...]],
        ) -> tuple[PendingAudit, RunRecord | None]:
            # Alone, the last step and the run's end: one statement (aifr_step_ends_run).
            armed = self._runs.armed_finish(key)
            if armed is None:  # disarmed meanwhile: the plain step
                return complete_alone(conn)
            finish, run_fence, finish_prepared = armed
            run = finish.run.evolve(updated_at=now)
            both = [prepared, finish_prepared]
            params = (
                str(parsed.attempt),
                *written,
                *run_change_text(run),
                finish.owner,
                None if run_fence is None else str(run_fence),
                append_fields(both),
            )
            ahead = self._runs.claim_ahead_call()
            if ahead is None:
                rows = self._rows(_STEP_ENDS_RUN, conn, params)
            else:  # the worker's next run claimed in the same commit (see claiming_ahead)
                rows, claimed = _STEP_ENDS_RUN.pair_deferred(
                    self._runs.database, conn, params, *ahead, "completing a step"
                )
                self._runs.claimed_ahead(claimed)
            records = appended_records(both[: len(rows)], rows)
            pending = PendingAudit(prepared, None)
            pending.resolve(records[0])
            return pending, run if len(records) == 2 else None  # else: not ours to end

        if parsed.is_undo:
            pending, finished_run = self._runs.transact_one(
                "completing a step", complete_in, complete_alone, parsed.run_id
            )
        else:  # in a batch the run's end, if armed, is the step's savepoint (finish_in)
            pending, finished_run = self._runs.transact_one(
                "completing a step",
                complete_in,
                complete_ending_alone if self._runs.finishes(key) else complete_alone,
                parsed.run_id,
            )
        self._runs.note_completion(key, finished_run)
        return pending.record

    def _rows(
        self, call: PreparedCall, conn: psycopg.Connection[Any], params: Sequence[str | None]
    ) -> list[tuple[str | None, ...]]:
        """A lone step's statement; inside ``deferring``, back before its commit is confirmed.

        The connection is then held until :meth:`settle` reads the confirmation (see
        :meth:`PostgresDatabase.deferring`): the engine settles before the next step's
        effect, so the checks in between overlap the commit's flush.
        """
        return call.rows_deferred(self._runs.database, conn, params, "completing a step")

    def defers_commits(self) -> bool:
        """Whether this thread is inside the database's deferred commits (see ``settle``)."""
        return self._runs.database.defers_commits()

    def settle(self) -> None:
        """Wait for this thread's step write whose commit is not confirmed yet, if any.

        Raises:
            UnconfirmedCommitError: it was not confirmed (see ``PostgresDatabase.settle``).
        """
        self._runs.database.settle()

    def release(self, principal: str, key: str) -> None:
        """Forget an unfinished claim, and the completion foreseen for it on this thread."""
        if StepKey.parse(key) is None:
            self._fallback.release(principal, key)
            return
        with self._lock:
            self._digests.pop((principal, key), None)
        foreseen = self._foreseen.foreseen
        if foreseen is not None and foreseen.key == key and foreseen.principal == principal:
            self._foreseen.foreseen = None
