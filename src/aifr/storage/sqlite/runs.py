"""Workflow runs, steps, leases and the notification outbox in the SQLite state database.

:class:`SqliteRunStore` implements the engine's ``RunStore`` and ``NotificationOutbox``
ports; all its writes (steps, runs, leases, the outbox) go through one
:class:`GroupCommit`, so concurrent runs share transactions and no two of this
process's writers ever meet on SQLite's write lock (whose busy handler sleeps a
millisecond or more at a time). Step results are written by
:class:`~aifr.storage.sqlite.step_results.StepResultStore` in the same tables.
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import json
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from aifr.audit import AuditEvent, AuditLedger, AuditRecord
from aifr.errors import ErrorCode, WorkflowError
from aifr.storage.run_rows import (
    CLAIMABLE_INDEX,
    ENCODE,
    RUN_COLUMNS,
    STEP_COLUMNS,
    encode_column,
    prunable_where,
    run_from_row,
    run_params,
    states_in,
    step_from_row,
    step_params,
)
from aifr.storage.sqlite.database import Migration, SqliteDatabase, translate_sqlite_errors
from aifr.storage.sqlite.groupcommit import GroupCommit
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

__all__ = ["WORKFLOW_MIGRATIONS", "SqliteRunStore", "encode_column"]

WORKFLOW_MIGRATIONS = [
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
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            lease_owner TEXT,
            lease_expires_at REAL
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
            next_attempt_at REAL,
            finished_at REAL,
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
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            url TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            delivered_at REAL,
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
    # A queued run's start event (JSON), appended by the claim that first takes it.
    Migration(4, "ALTER TABLE wf_runs ADD COLUMN start_event TEXT"),
    # The worker registry (see WorkerRegistry): each ``aifr worker`` process, seen lately.
    Migration(5, workers_table("REAL")),
]


@functools.lru_cache(maxsize=8)
def _oldest_free_sql(states: frozenset[RunState]) -> str:
    """The oldest run in ``states`` whose lease is free or expired (one ``?``: now).

    Its id, state and start event (see :meth:`SqliteRunStore.claim`).

    The work queue's own states walk ``wf_runs_claimable`` in order (its ``WHERE`` is
    this very term) and stop at the first free run; left to its estimates SQLite sorted
    every active run instead.
    """
    queue = " INDEXED BY wf_runs_claimable" if states == ACTIVE_STATES else ""
    return (
        f"SELECT id, state, start_event FROM wf_runs{queue} WHERE {states_in(states)} "  # noqa: S608  # enum literals
        "AND (lease_owner IS NULL OR lease_expires_at < ?) "
        "ORDER BY created_at, id LIMIT 1"
    )


_INSERT_RUN = f"INSERT INTO wf_runs ({RUN_COLUMNS}) VALUES ({', '.join('?' * 16)})"  # noqa: S608  # constant column list
_INSERT_QUEUED_RUN = (
    f"INSERT INTO wf_runs ({RUN_COLUMNS}, start_event) VALUES ({', '.join('?' * 17)})"  # noqa: S608  # constant column list
)
_SELECT_RUN_EPOCH = f"SELECT {RUN_COLUMNS}, lease_epoch FROM wf_runs WHERE id = ?"  # noqa: S608  # constant column list


def _event_text(event: AuditEvent) -> str:
    """``event`` as JSON, to be read back by :func:`_event_from_text` (a claim's start)."""
    return json.dumps(dataclasses.asdict(event), sort_keys=True)


def _event_from_text(text: str) -> AuditEvent:
    return AuditEvent(**json.loads(text))


_STEP_UPSERT = (
    f"INSERT INTO wf_steps ({STEP_COLUMNS}) VALUES ({', '.join('?' * 19)}) "  # noqa: S608  # constant column list
    "ON CONFLICT (run_id, step_id) DO UPDATE SET "
    + ", ".join(
        f"{c} = excluded.{c}" for c in STEP_COLUMNS.split(", ") if c not in ("run_id", "step_id")
    )
)


_DEFINITIONS_KEPT = 64
"""How many workflow definitions :class:`SqliteRunStore` keeps encoded."""


class _Attempt:
    """What the lease holder said of a step attempt it is about to invoke (never changed).

    A plain slotted class: one is made per step, and a frozen dataclass costs four times
    as much to build.
    """

    __slots__ = ("fence", "finish", "unrecorded")

    def __init__(self, unrecorded: bool, finish: RunFinish | None, fence: int | None) -> None:
        self.unrecorded = unrecorded
        self.finish = finish
        self.fence = fence


class SqliteRunStore:
    """The ``RunStore`` and ``NotificationOutbox`` ports over the SQLite state database."""

    def __init__(self, database: SqliteDatabase, ledger: AuditLedger) -> None:
        self.database = database
        self.ledger = ledger
        self.group = GroupCommit(database)
        self._completions: dict[str, Completion] = {}
        self._attempts: dict[str, _Attempt] = {}
        self._completions_lock = threading.Lock()
        self._epochs: dict[str, int] = {}
        self._definitions: dict[int, tuple[dict[str, Any], str]] = {}
        database.migrate("workflows", WORKFLOW_MIGRATIONS)

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

        A queued run keeps ``start`` (redacted and checked now, as the PostgreSQL store
        does, and kept as JSON), and the claim that first takes it appends it in its own
        transaction (see :meth:`claim`).
        """
        params = run_params(run, self._definition_text(run))
        if start is not None and run.state is RunState.PENDING and run.lease_owner is None:
            redacted = self.ledger.prepare(start)[0]  # no secret waits in the run's row
            insert, params = _INSERT_QUEUED_RUN, (*params, _event_text(redacted))
        else:
            insert = _INSERT_RUN

        def create_in(conn: sqlite3.Connection) -> AuditRecord:
            with translate_sqlite_errors("creating a run"):
                conn.execute(insert, params)
                if run.lease_owner is not None:
                    self._held(run.id, 0)
                conn.executemany(_STEP_UPSERT, [step_params(s) for s in steps])
                return self.ledger.append_in(conn, audit)

        return self.group.run(create_in)

    def _definition_text(self, run: RunRecord) -> str:
        """The JSON of ``run.definition``, encoded once per definition object.

        Encoding a definition costs more than the rest of starting a run, and the engine
        hands every run of one workflow spec the same (never mutated) definition dict, so
        the text is kept by that object's identity; the entry holds the object, so the
        identity cannot be reused while it is kept.
        """
        definition = run.definition
        cached = self._definitions.get(id(definition))
        if cached is not None and cached[0] is definition:
            return cached[1]
        text = ENCODE(definition)
        if len(self._definitions) >= _DEFINITIONS_KEPT:
            self._definitions.clear()
        self._definitions[id(definition)] = (definition, text)
        return text

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

        With ``owner`` set, the write only happens while ``owner`` holds the lease (or
        nobody does); the run's own ``lease_owner`` is what the row keeps afterwards.

        Raises:
            WorkflowError: ``workflow.lease_lost`` when another worker holds the lease.
        """
        return self.group.run(
            lambda conn: self._save_in(conn, run, steps, audit, notification, owner)
        )

    def _save_in(
        self,
        conn: sqlite3.Connection,
        run: RunRecord,
        steps: Sequence[StepRecord],
        audit: AuditEvent | None,
        notification: Notification | None,
        owner: str | None,
    ) -> AuditRecord | None:
        fence = self._fence_of(run.id) if owner is not None else None
        with translate_sqlite_errors("saving a run"):
            updated = conn.execute(
                "UPDATE wf_runs SET state = ?, fingerprints = ?, error = ?, failed_step = ?, "
                "cancel_requested = ?, updated_at = ?, lease_owner = ?, lease_expires_at = ? "
                "WHERE id = ? AND (? IS NULL OR lease_owner IS NULL OR lease_owner = ?) "
                "AND (? IS NULL OR lease_epoch = ?)",
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
                ),
            ).rowcount
            if updated != 1:
                raise WorkflowError(
                    f"run {run.id}: the lease was taken over by another worker",
                    code=ErrorCode.WORKFLOW_LEASE_LOST,
                    run_id=run.id,
                )
            if steps:
                conn.executemany(_STEP_UPSERT, [step_params(s) for s in steps])
            if notification is not None:
                conn.execute(
                    "INSERT INTO wf_outbox (kind, url, body, created_at, next_attempt_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        notification.kind,
                        notification.url,
                        encode_column(notification.body),
                        run.updated_at,
                        run.updated_at,
                    ),
                )
            return self.ledger.append_in(conn, audit) if audit is not None else None

    def begin_attempt(self, key: str, *, unrecorded: bool, finish: RunFinish | None) -> None:
        """Note what the lease holder knows of the attempt ``key`` (see ``RunStore``)."""
        with self._completions_lock:
            self._attempts[key] = _Attempt(unrecorded, finish, self._epochs.get(_run_of(key)))

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

    def check_fence_in(self, conn: sqlite3.Connection, run_id: str, epoch: int) -> None:
        """Inside the caller's write transaction: refuse unless the lease epoch is ``epoch``.

        Raises:
            WorkflowError: ``workflow.lease_lost`` when the lease changed hands.
        """
        with translate_sqlite_errors("checking a lease"):
            row = conn.execute(
                "SELECT 1 FROM wf_runs WHERE id = ? AND lease_epoch = ?", (run_id, epoch)
            ).fetchone()
        if row is None:
            raise WorkflowError(
                f"run {run_id}: the lease was taken over by another worker; "
                "its audit record is refused",
                code=ErrorCode.WORKFLOW_LEASE_LOST,
                run_id=run_id,
            )

    def append_fenced(self, event: AuditEvent, run_id: str, epoch: int) -> AuditRecord:
        """Append ``event`` only while the run's lease epoch is still ``epoch`` (one commit).

        Raises:
            WorkflowError: ``workflow.lease_lost``; nothing is appended.
        """

        def append_in(conn: sqlite3.Connection) -> AuditRecord:
            self.check_fence_in(conn, run_id, epoch)
            return self.ledger.append_in(conn, event)

        return self.group.run(append_in)

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

    def finish_in(self, conn: sqlite3.Connection, key: str, now: float) -> RunRecord | None:
        """Inside the step's own transaction: write the run's end armed for ``key``, if any.

        Returns the run as written, or ``None`` when nothing was armed or the lease was
        lost meanwhile: the step's success is kept (it happened, and is audited), and the
        engine's own end-of-run commit then finds the lease gone and stops.
        """
        with self._completions_lock:
            attempt = self._attempts.get(key)
        finish = attempt.finish if attempt is not None else None
        if finish is None:
            return None
        run = finish.run.evolve(updated_at=now)
        try:
            self._save_in(conn, run, (), finish.audit, None, finish.owner)
        except WorkflowError as exc:  # raised before anything was written
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
        with translate_sqlite_errors("reading a run"):
            row = (
                self.database.connect()
                .execute("SELECT cancel_requested FROM wf_runs WHERE id = ?", (run_id,))
                .fetchone()
            )
        return bool(row and row[0])

    def request_cancel(self, run_id: str) -> None:
        """Flag a run for cancellation; its lease holder stops at the next step."""

        def cancel_in(conn: sqlite3.Connection) -> None:
            with translate_sqlite_errors("cancelling a run"):
                conn.execute("UPDATE wf_runs SET cancel_requested = 1 WHERE id = ?", (run_id,))

        self.group.run(cancel_in)

    def get(self, run_id: str) -> RunRecord | None:
        """The run, or ``None``."""
        with translate_sqlite_errors("reading a run"):
            row = (
                self.database.connect()
                .execute(f"SELECT {RUN_COLUMNS} FROM wf_runs WHERE id = ?", (run_id,))  # noqa: S608  # constant column list
                .fetchone()
            )
        return run_from_row(row) if row is not None else None

    def steps(self, run_id: str) -> list[StepRecord]:
        """The run's steps in definition order."""
        with translate_sqlite_errors("reading steps"):
            rows = (
                self.database.connect()
                .execute(
                    f"SELECT {STEP_COLUMNS} FROM wf_steps WHERE run_id = ? ORDER BY idx",  # noqa: S608  # constant column list
                    (run_id,),
                )
                .fetchall()
            )
        return [step_from_row(r) for r in rows]

    def step(self, run_id: str, step_id: str) -> StepRecord | None:
        """One step, or ``None``."""
        with translate_sqlite_errors("reading a step"):
            row = (
                self.database.connect()
                .execute(
                    f"SELECT {STEP_COLUMNS} FROM wf_steps WHERE run_id = ? AND step_id = ?",  # noqa: S608  # constant column list
                    (run_id, step_id),
                )
                .fetchone()
            )
        return step_from_row(row) if row is not None else None

    def list(self, *, state: RunState | None = None, limit: int = 100) -> list[RunRecord]:
        """Runs, newest first, optionally of one state."""
        query = f"SELECT {RUN_COLUMNS} FROM wf_runs"  # noqa: S608  # constant column list
        params: tuple[Any, ...] = ()
        if state is not None:
            query += " WHERE state = ?"
            params = (state.value,)
        query += " ORDER BY created_at DESC, id DESC LIMIT ?"
        with translate_sqlite_errors("listing runs"):
            rows = self.database.connect().execute(query, (*params, limit)).fetchall()
        return [run_from_row(r) for r in rows]

    def count_by_state(self) -> dict[str, int]:
        """How many runs are in each state (states with none are left out)."""
        with translate_sqlite_errors("counting runs"):
            rows = (
                self.database.connect()
                .execute("SELECT state, COUNT(*) FROM wf_runs GROUP BY state ORDER BY state")
                .fetchall()
            )
        return {str(row[0]): int(row[1]) for row in rows}

    def unfinished(self, states: frozenset[RunState], limit: int = 100) -> builtins.list[RunRecord]:
        """Runs in ``states``, oldest first."""
        marks = ", ".join("?" * len(states))
        with translate_sqlite_errors("listing unfinished runs"):
            rows = (
                self.database.connect()
                .execute(
                    f"SELECT {RUN_COLUMNS} FROM wf_runs WHERE state IN ({marks}) "  # noqa: S608  # only "?" marks are interpolated
                    "ORDER BY created_at, id LIMIT ?",
                    (*sorted(s.value for s in states), limit),
                )
                .fetchall()
            )
        return [run_from_row(r) for r in rows]

    def prunable(self, states: frozenset[RunState], finished_before: float) -> int:
        """How many runs in ``states`` last changed before ``finished_before``."""
        where = prunable_where(states, "?")
        with translate_sqlite_errors("counting runs to prune"):
            row = (
                self.database.connect()
                .execute(
                    f"SELECT COUNT(*) FROM wf_runs WHERE {where}",  # noqa: S608  # enum literals and "?" marks
                    (finished_before, finished_before),
                )
                .fetchone()
            )
        return int(row[0])

    def prune(
        self, states: frozenset[RunState], finished_before: float, audit: PruneAudit, limit: int
    ) -> builtins.list[str]:
        """Delete up to ``limit`` such runs (steps cascade) and append ``audit(ids)``: one commit."""
        delete = (
            "DELETE FROM wf_runs WHERE id IN (SELECT id FROM wf_runs "  # noqa: S608  # enum literals and "?" marks
            f"WHERE {prunable_where(states, '?')} ORDER BY created_at, id LIMIT ?) RETURNING id"
        )

        def prune_in(conn: sqlite3.Connection) -> builtins.list[str]:
            with translate_sqlite_errors("pruning runs"):
                ids = sorted(
                    str(row[0])
                    for row in conn.execute(delete, (finished_before, finished_before, limit))
                )
                if ids:
                    self.ledger.append_in(conn, audit(ids))
                return ids

        return self.group.run(prune_in)

    # -- leases ---------------------------------------------------------------------------

    def acquire(self, run_id: str, owner: str, ttl_s: float, now: float) -> RunRecord | None:
        """Take the lease if it is free, expired or already ``owner``'s."""

        def acquire_in(conn: sqlite3.Connection) -> Any:
            with translate_sqlite_errors("leasing a run"):
                taken = conn.execute(
                    "UPDATE wf_runs SET lease_epoch = lease_epoch + "
                    "(CASE WHEN lease_owner = ? THEN 0 ELSE 1 END), lease_owner = ?, "
                    "lease_expires_at = ? WHERE id = ? AND "
                    "(lease_owner IS NULL OR lease_owner = ? OR lease_expires_at < ?)",
                    (owner, owner, now + ttl_s, run_id, owner, now),
                ).rowcount
                if taken != 1:
                    return None
                row = conn.execute(_SELECT_RUN_EPOCH, (run_id,)).fetchone()
                return row

        row = self.group.run(acquire_in)
        if row is None:
            return None
        self._held(run_id, row["lease_epoch"])
        return run_from_row(row)

    def claim(
        self, states: frozenset[RunState], owner: str, ttl_s: float, now: float
    ) -> RunRecord | None:
        """Lease the oldest free or expired run in ``states`` (``BEGIN IMMEDIATE`` serializes).

        A pending run queued with its start event comes back running, the event
        appended in the claim's own transaction (the engine then has no start to
        commit).
        """
        oldest_free = _oldest_free_sql(states)

        def claim_in(conn: sqlite3.Connection) -> Any:
            with translate_sqlite_errors("claiming a run"):
                row = conn.execute(oldest_free, (now,)).fetchone()
                if row is None:
                    return None
                start = row["start_event"] if row["state"] == RunState.PENDING.value else None
                conn.execute(
                    "UPDATE wf_runs SET lease_epoch = lease_epoch + 1, lease_owner = ?, "
                    "lease_expires_at = ?, start_event = NULL, "
                    "state = CASE WHEN ? THEN ? ELSE state END, "
                    "updated_at = CASE WHEN ? THEN ? ELSE updated_at END WHERE id = ?",
                    (
                        owner,
                        now + ttl_s,
                        start is not None,
                        RunState.RUNNING.value,
                        start is not None,
                        now,
                        row["id"],
                    ),
                )
                if start is not None:  # the run's row first, the chain last
                    self.ledger.append_in(conn, _event_from_text(start))
                taken = conn.execute(_SELECT_RUN_EPOCH, (row["id"],)).fetchone()
                return taken

        taken = self.group.run(claim_in)
        if taken is None:
            return None
        self._held(taken["id"], taken["lease_epoch"])
        return run_from_row(taken)

    def take_over(self, run_id: str, dead_owner: str, owner: str, ttl_s: float, now: float) -> bool:
        """Take a lease from an owner known to be dead (its process is gone)."""

        def take_over_in(conn: sqlite3.Connection) -> Any:
            with translate_sqlite_errors("leasing a run"):
                taken = conn.execute(
                    "UPDATE wf_runs SET lease_owner = ?, lease_expires_at = ?, "
                    "lease_epoch = lease_epoch + 1 WHERE id = ? AND lease_owner = ?",
                    (owner, now + ttl_s, run_id, dead_owner),
                ).rowcount
                row = conn.execute(_SELECT_RUN_EPOCH, (run_id,)).fetchone() if taken == 1 else None
                return row

        row = self.group.run(take_over_in)
        if row is not None:
            self._held(run_id, row["lease_epoch"])
        return row is not None

    def renew(self, run_ids: Sequence[str], owner: str, ttl_s: float, now: float) -> None:
        """Extend ``owner``'s leases."""
        if not run_ids:
            return
        renewed = [(now + ttl_s, run_id, owner) for run_id in run_ids]

        def renew_in(conn: sqlite3.Connection) -> None:
            with translate_sqlite_errors("renewing leases"):
                conn.executemany(
                    "UPDATE wf_runs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ?",
                    renewed,
                )

        self.group.run(renew_in)

    def release(self, run_id: str, owner: str) -> None:
        """Give the lease back."""

        def release_in(conn: sqlite3.Connection) -> None:
            with translate_sqlite_errors("releasing a lease"):
                conn.execute(
                    "UPDATE wf_runs SET lease_owner = NULL, lease_expires_at = NULL "
                    "WHERE id = ? AND lease_owner = ?",
                    (run_id, owner),
                )

        self.group.run(release_in)

    # -- outbox ---------------------------------------------------------------------------

    def due(self, now: float, limit: int = 50) -> builtins.list[OutboxItem]:
        """Undelivered notifications whose next attempt is due, oldest first."""
        with translate_sqlite_errors("reading the outbox"):
            rows = (
                self.database.connect()
                .execute(
                    "SELECT id, kind, url, body, created_at, attempts, next_attempt_at, "
                    "delivered_at, last_error FROM wf_outbox WHERE delivered_at IS NULL "
                    "AND next_attempt_at <= ? ORDER BY id LIMIT ?",
                    (now, limit),
                )
                .fetchall()
            )
        return [
            OutboxItem(
                id=r["id"],
                notification=Notification(r["kind"], r["url"], json.loads(r["body"])),
                created_at=r["created_at"],
                attempts=r["attempts"],
                next_attempt_at=r["next_attempt_at"],
                delivered_at=r["delivered_at"],
                last_error=r["last_error"],
            )
            for r in rows
        ]

    def delivered(self, item_id: int, now: float) -> None:
        """Mark a notification delivered."""

        def delivered_in(conn: sqlite3.Connection) -> None:
            with translate_sqlite_errors("updating the outbox"):
                conn.execute(
                    "UPDATE wf_outbox SET delivered_at = ?, attempts = attempts + 1 WHERE id = ?",
                    (now, item_id),
                )

        self.group.run(delivered_in)

    def retry_later(self, item_id: int, next_attempt_at: float, error: str) -> None:
        """Count a failed attempt and schedule the next."""

        def retry_in(conn: sqlite3.Connection) -> None:
            with translate_sqlite_errors("updating the outbox"):
                conn.execute(
                    "UPDATE wf_outbox SET attempts = attempts + 1, next_attempt_at = ?, "
                    "last_error = ? WHERE id = ?",
                    (next_attempt_at, error[:500], item_id),
                )

        self.group.run(retry_in)

    def pending(self) -> int:
        """Undelivered notifications."""
        with translate_sqlite_errors("reading the outbox"):
            row = (
                self.database.connect()
                .execute("SELECT COUNT(*) FROM wf_outbox WHERE delivered_at IS NULL")
                .fetchone()
            )
        return int(row[0])


def _run_of(key: str) -> str:
    """The run id of a step key (``wf:<run>:...``), or ``""``."""
    parsed = StepKey.parse(key)
    return parsed.run_id if parsed is not None else ""
