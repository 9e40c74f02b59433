"""Workflow step results recorded by the runtime, in the invocation's own transaction.

:class:`StepResultStore` implements the runtime's ``IdempotencyStore`` port for
workflow step keys (``wf:...``) and passes every other key to the ordinary store. When
a step's invocation succeeds, the runtime hands it the result together with the
invocation's audit event, and it marks the step completed (or compensated, for an undo)
and appends the audit record in one transaction. A step therefore costs one commit (one
fsync), and its result is durable before the next step starts.

A step key's claim writes nothing: a run is driven by one lease holder at a time, so
no second writer can race for the key, and a claim lost in a crash needs no cleanup.

The stored result (replayed for a repeated key) leaves out the output, which the step
row already holds in its own column: the output, often the largest value of a step,
is encoded and written once. It keeps only what replaying needs
(``aifr.storage.run_rows.replay_fields``: no derived fields, no defaults).
"""

from __future__ import annotations

import json
import sqlite3
import threading

from pydantic import JsonValue

from aifr.audit import AuditEvent, AuditRecord
from aifr.errors import ErrorCode, WorkflowError
from aifr.invocation import IdempotencyRecord, IdempotencyStore
from aifr.storage.run_rows import replay_fields
from aifr.storage.sqlite.database import translate_sqlite_errors
from aifr.storage.sqlite.runs import SqliteRunStore, encode_column
from aifr.workflows.ports import RunRecord, StepKey, StepState

__all__ = ["StepResultStore", "refuse_late_step"]

_FENCED = " AND (? IS NULL OR EXISTS (SELECT 1 FROM wf_runs WHERE id = ? AND lease_epoch = ?))"
"""Write a step's result only while the run's lease epoch is the one the attempt began with."""

_COMPLETE_UNDO = (
    "UPDATE wf_steps SET state = ?, undo_attempt = ?, undo_capability = ?, "  # noqa: S608  # constant clauses
    "undo_output = ?, undo_error = NULL, undo_digest = ?, undo_result = ?, "
    "finished_at = ? WHERE run_id = ? AND step_id = ?" + _FENCED
)
_COMPLETE_STEP = (
    "UPDATE wf_steps SET state = ?, attempt = ?, output = ?, error = NULL, "  # noqa: S608  # constant clauses
    "request_digest = ?, result = ?, audit_id = ?, finished_at = ?, "
    "next_attempt_at = NULL WHERE run_id = ? AND step_id = ?" + _FENCED
)
_COMPLETED = StepState.COMPLETED.value
_COMPENSATED = StepState.COMPENSATED.value  # an enum's .value is a Python-level property
_SELECT_STEP_RESULT = (
    "SELECT attempt, request_digest AS digest, result, output, finished_at FROM wf_steps "
    "WHERE run_id = ? AND step_id = ?"
)
_SELECT_UNDO_RESULT = (
    "SELECT undo_attempt AS attempt, undo_digest AS digest, undo_result AS result, "
    "undo_output AS output, finished_at FROM wf_steps WHERE run_id = ? AND step_id = ?"
)


class StepResultStore:
    """The runtime's ``IdempotencyStore`` port: step keys complete their step in one commit.

    Keys that are not workflow step keys (:class:`~aifr.workflows.ports.StepKey`) go to
    ``fallback`` unchanged.
    """

    def __init__(self, runs: SqliteRunStore, fallback: IdempotencyStore) -> None:
        self._runs = runs
        self._db = runs.database
        self._ledger = runs.ledger
        self._fallback = fallback
        self._digests: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def get(self, principal: str, key: str) -> IdempotencyRecord | None:
        """A completed step's stored result for this exact attempt, or ``None``."""
        parsed = StepKey.parse(key)
        if parsed is None:
            return self._fallback.get(principal, key)
        if self._runs.is_unrecorded(key):  # the lease holder knows: no read needed
            return None
        query = _SELECT_UNDO_RESULT if parsed.is_undo else _SELECT_STEP_RESULT
        with translate_sqlite_errors("reading a step result"):
            row = self._db.connect().execute(query, (parsed.run_id, parsed.step_id)).fetchone()
        if row is None or row["result"] is None or row["attempt"] != parsed.attempt:
            return None
        result = json.loads(row["result"])
        output = row["output"]
        result["output"] = json.loads(output) if output is not None else None
        return IdempotencyRecord(
            principal=principal,
            key=key,
            request_digest=row["digest"],
            created_at=row["finished_at"] or 0.0,
            result=result,
            completed_at=row["finished_at"],
        )

    def claim(
        self, principal: str, key: str, request_digest: str, now: float
    ) -> IdempotencyRecord | None:
        """Note the digest for :meth:`complete`; the lease makes the claim exclusive."""
        if StepKey.parse(key) is None:
            return self._fallback.claim(principal, key, request_digest, now)
        # The runtime asked get() for this key a moment ago, and the lease means nobody
        # else can have completed it since: no second read.
        with self._lock:
            self._digests[(principal, key)] = request_digest
        return None

    def complete(
        self,
        principal: str,
        key: str,
        result: dict[str, JsonValue],
        now: float,
        audit: AuditEvent,
    ) -> AuditRecord:
        """Mark the step (or its compensation) done and append the audit record, at once."""
        parsed = StepKey.parse(key)
        if parsed is None:
            return self._fallback.complete(principal, key, result, now, audit)
        with self._lock:
            request_digest = self._digests.pop((principal, key), None)
        fence = self._runs.fence(key)
        # Redacted and encoded here, not in the shared transaction: a batch's write lock
        # is held for its rows only, and a bad event fails alone, before any batch.
        build = self._ledger.builder_for(audit)
        output = encode_column(result.get("output"))
        stored = encode_column(replay_fields(result))

        def complete_in(conn: sqlite3.Connection) -> tuple[AuditRecord, RunRecord | None]:
            with translate_sqlite_errors("completing a step"):
                record = self._ledger.append_built_in(conn, build)
                if parsed.is_undo:
                    written = conn.execute(
                        _COMPLETE_UNDO,
                        (
                            _COMPENSATED,
                            parsed.attempt,
                            result.get("capability_id"),
                            output,
                            request_digest,
                            stored,
                            now,
                            parsed.run_id,
                            parsed.step_id,
                            fence,
                            parsed.run_id,
                            fence,
                        ),
                    ).rowcount
                    refuse_late_step(written, parsed)
                else:
                    written = conn.execute(
                        _COMPLETE_STEP,
                        (
                            _COMPLETED,
                            parsed.attempt,
                            output,
                            request_digest,
                            stored,
                            record.id,
                            now,
                            parsed.run_id,
                            parsed.step_id,
                            fence,
                            parsed.run_id,
                            fence,
                        ),
                    ).rowcount
                    refuse_late_step(written, parsed)
                    return record, self._runs.finish_in(conn, key, now)
            return record, None

        record, finished_run = self._runs.group.run(complete_in)
        self._runs.note_completion(key, finished_run)
        return record

    def release(self, principal: str, key: str) -> None:
        """Forget an unfinished claim."""
        if StepKey.parse(key) is None:
            self._fallback.release(principal, key)
            return
        with self._lock:
            self._digests.pop((principal, key), None)


def refuse_late_step(written: int, key: StepKey) -> None:
    """Raise ``workflow.lease_lost`` when the fenced step write matched nothing.

    Raised inside the transaction, so the audit record appended with it is rolled back
    too: a worker whose lease was taken leaves no trace of its late attempt.
    """
    if written != 1:
        raise WorkflowError(
            f"run {key.run_id}: step {key.step_id!r} finished after the lease was taken over; "
            "the database refused the late result",
            code=ErrorCode.WORKFLOW_LEASE_LOST,
            run_id=key.run_id,
        )
