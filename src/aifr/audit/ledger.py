"""The append-only, hash-chained audit ledger with group commit.

``append`` returns only once its record is durable (committed by the store at the
database's ``synchronous`` level). Durability costs one fsync per transaction, so
concurrent appenders share transactions: the first thread to arrive becomes the leader
and commits every record queued so far in one transaction; threads arriving meanwhile
queue and sleep on a held lock. When the leader's commit returns it wakes its batch and
hands leadership to the oldest waiting thread, whose batch is everything that queued
during the commit. A lone caller therefore pays one transaction and no handoff, while N
concurrent callers pay about one fsync per batch instead of N.

Redaction and JSON encoding happen in the caller's thread before queueing; the leader
only assigns seq, id, time and hashes, which need the head as it stands inside the
transaction.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aifr.audit.checkpoint import Checkpoint, sign_checkpoint
from aifr.audit.ports import AuditStore, ChainBuilder
from aifr.audit.prefigure import EventTemplate, known_prepared, prefigure
from aifr.audit.record import (
    AuditEvent,
    AuditRecord,
    ChainHead,
    PreparedEvent,
    chain_hash,
    encode_event_and_details,
    new_record_id,
    parse_timestamp,
    utc_timestamp,
)
from aifr.audit.redact import redact_details
from aifr.audit.verify import VerifyReport, verify_chain
from aifr.errors import AifrError, AuditError

__all__ = ["MAX_BATCH", "AuditLedger", "LedgerStats", "PreparedEvent"]

MAX_BATCH = 512
"""Most records one group-commit transaction carries (bounds a batch's latency)."""


@dataclass(frozen=True, slots=True)
class LedgerStats:
    """Counters since the ledger was built: appended records and the transactions used."""

    appends: int
    commits: int
    largest_batch: int


class _Waiter:
    """One queued ``append``: its prepared event and, later, its record or error."""

    __slots__ = ("error", "is_abandoned", "is_leader", "prepared", "record", "wake")

    def __init__(self, prepared: PreparedEvent) -> None:
        self.prepared = prepared
        self.record: AuditRecord | None = None
        self.error: AifrError | None = None
        self.is_leader = False
        self.is_abandoned = False
        self.wake: threading.Lock | None = None  # held until the waiter may go on

    def sleep(self) -> None:
        """Block until :meth:`rouse` (a held lock, cheaper than an ``Event``)."""
        assert self.wake is not None  # noqa: S101  # only queued followers sleep
        self.wake.acquire()

    def rouse(self) -> None:
        """Let the sleeping waiter go on; a second call does nothing."""
        wake = self.wake
        if wake is not None and wake.locked():
            wake.release()

    def outcome(self) -> AuditRecord:
        if self.error is not None:
            raise self.error
        if self.record is None:
            raise AuditError("audit append finished without a record")
        return self.record


def _builder(batch: Sequence[PreparedEvent]) -> ChainBuilder:
    def build(head: ChainHead) -> list[AuditRecord]:
        ts = utc_timestamp()
        seq, prev = head.seq, head.hash
        records = []
        for event, event_json, details_json in batch:
            seq += 1
            record_id = new_record_id(seq)
            digest = chain_hash(event_json, seq=seq, record_id=record_id, ts=ts, prev_hash=prev)
            records.append(AuditRecord(seq, record_id, ts, prev, digest, event, details_json))
            prev = digest
        return records

    return build


class AuditLedger:
    """Append, read, verify and checkpoint one hash chain held by an :class:`AuditStore`.

    Thread-safe; one instance per process and database. Several processes may append to
    the same database: the store extends the head as it stands inside each write
    transaction.
    """

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._queue: list[_Waiter] = []
        self._is_leading = False
        self._appends = 0
        self._commits = 0
        self._largest_batch = 0

    @staticmethod
    def _prepare(event: AuditEvent) -> PreparedEvent:
        known = known_prepared(event)  # filled in from its template (see aifr.audit.prefigure)
        if known is not None:
            return known
        details = redact_details(event.details)
        if details is not event.details:
            event = dataclasses.replace(event, details=details)
        return (event, *encode_event_and_details(event))

    def append(self, event: AuditEvent) -> AuditRecord:
        """Append ``event``; returns its record once it is durable.

        Raises:
            AuditError: the event is not JSON-safe, or the append failed.
            StorageError: the database failed.
        """
        prepared = self._prepare(event)
        with self._lock:
            if not self._is_leading and not self._queue:
                self._is_leading = True
                waiter = None
            else:  # behind a commit, or after records abandoned in the queue
                waiter = _Waiter(prepared)
                self._queue.append(waiter)
                if self._is_leading:
                    waiter.wake = threading.Lock()
                    waiter.wake.acquire()
                else:
                    self._is_leading = waiter.is_leader = True
        if waiter is None:
            return self._alone(prepared)
        if waiter.wake is not None:
            try:
                waiter.sleep()
            except BaseException:
                self._abandon(waiter)
                raise
            if not waiter.is_leader:
                return waiter.outcome()
            # A promoted leader yields the GIL once, so the threads its predecessor just
            # woke can queue their next records and ride this batch instead of the next.
            time.sleep(0)
        self._lead()
        while waiter.record is None and waiter.error is None:
            self._lead()  # only when more than MAX_BATCH abandoned records queued ahead
        return waiter.outcome()

    def _alone(self, prepared: PreparedEvent) -> AuditRecord:
        """Nobody else is appending: commit this one record, then hand leadership on.

        No waiter, queue or hand-off: a lone caller pays its transaction and nothing
        more. Records queued meanwhile go to the next leader's batch.
        """
        try:
            return self.store.append(_builder((prepared,)))[0]
        finally:
            self._hand_on(1)

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiting thread was interrupted (Ctrl-C): never leave leadership unclaimed.

        Its record still rides the next batch. If it had already been promoted, it
        commits that batch before the interruption propagates; otherwise it is marked so
        that no one promotes it later.
        """
        with self._lock:
            waiter.is_abandoned = True
            is_promoted = waiter.is_leader
        if is_promoted:
            self._lead()

    def _lead(self) -> None:
        """Commit everything queued (up to :data:`MAX_BATCH`), then pass leadership on."""
        with self._lock:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        try:
            records = self.store.append(_builder([w.prepared for w in batch]))
            for waiter, record in zip(batch, records, strict=True):
                waiter.record = record
        except AifrError as exc:
            for waiter in batch:
                waiter.error = exc
        except Exception as exc:  # a follower must never sleep forever on a failed batch
            for waiter in batch:
                waiter.error = AuditError(f"audit append failed: {exc!r}")
            raise
        finally:
            for waiter in batch:
                waiter.rouse()
            self._hand_on(len(batch))

    def _hand_on(self, appended: int) -> None:
        """Count a finished transaction and promote the oldest waiter still waiting."""
        with self._lock:
            self._commits += 1
            self._appends += appended
            self._largest_batch = max(self._largest_batch, appended)
            successor = None
            for waiting in self._queue:
                if not waiting.is_abandoned:
                    successor = waiting
                    break
            if successor is not None:
                successor.is_leader = True
            else:
                self._is_leading = False
        if successor is not None:
            successor.rouse()

    def append_in(self, conn: object, event: AuditEvent) -> AuditRecord:
        """Append ``event`` inside the caller's open write transaction ``conn``.

        The record becomes durable when the caller commits, together with the caller's
        own writes; a rollback drops it and the chain stays whole.

        Raises:
            AuditError: the event is not JSON-safe, or ``conn`` is not an open transaction.
            StorageError: the database failed.
        """
        return self.append_built_in(conn, self.builder_for(event))

    def append_built_in(self, conn: object, build: ChainBuilder) -> AuditRecord:
        """Append the one record ``build`` (from :meth:`builder_for`) makes, inside ``conn``.

        For a writer that checks and encodes its event before it opens its transaction
        or joins a shared one: the redaction and the canonical JSON then run outside
        the database's write lock, and a bad event fails before anything is written.

        Raises:
            AuditError: ``conn`` is not an open transaction.
            StorageError: the database failed.
        """
        (record,) = self.store.append_in(conn, build)
        return record

    def prepare(self, event: AuditEvent) -> PreparedEvent:
        """Redact and encode ``event`` now, for a store that chains it itself later.

        For a store that computes seq, id, time and hash on the database server
        (PostgreSQL's ``aifr_audit_append``): a bad event fails here, before any lock.

        Raises:
            AuditError: the event is not JSON-safe.
        """
        return self._prepare(event)

    def prefigure(self, event: AuditEvent, slot: str) -> EventTemplate | None:
        """``event`` redacted and encoded now, but for ``details[slot]``, filled in later.

        For a caller that knows the whole record before an effect but one number of it
        (see :mod:`aifr.audit.prefigure`): the filled event, appended or prepared on the
        same thread, is not redacted or encoded again. ``None`` when the slot cannot be
        left open (the caller builds its event afterwards as usual).

        Raises:
            AuditError: the event is not JSON-safe.
        """
        return prefigure(event, slot)

    def builder_for(self, event: AuditEvent) -> ChainBuilder:
        """Check and encode ``event`` now; chain it onto a head later (``store.append_in``).

        For a transaction that writes its other rows first and appends its records only
        at its end, under the chain's lock: a bad event fails here, before that lock.

        Raises:
            AuditError: the event is not JSON-safe.
        """
        return _builder([self._prepare(event)])

    def records(
        self,
        since: str | None = None,
        until: str | None = None,
        principal: str | None = None,
        limit: int | None = None,
        *,
        after_seq: int = 0,
        newest_first: bool = False,
    ) -> Iterator[AuditRecord]:
        """Records in seq order (newest first if asked), ``since`` <= ts < ``until``.

        ``since``/``until`` are ISO 8601 dates or times (naive means UTC).

        Raises:
            AuditError: a time is not ISO 8601.
        """
        return self.store.scan(
            after_seq=after_seq,
            since=parse_timestamp(since) if since is not None else None,
            until=parse_timestamp(until) if until is not None else None,
            principal=principal,
            limit=limit,
            newest_first=newest_first,
        )

    def get(self, record_id: str) -> AuditRecord | None:
        """The record with this id, or ``None``."""
        return self.store.get(record_id)

    def head(self) -> ChainHead:
        """Seq and hash of the newest committed record."""
        return self.store.head()

    def verify(
        self, *, trusted_key: str | None = None, checkpoints: Sequence[Checkpoint] = ()
    ) -> VerifyReport:
        """Walk the whole chain; checkpoints kept in the store and ``checkpoints`` apply.

        ``trusted_key`` is the hex ed25519 public key checkpoints must be signed by.
        """
        return verify_chain(
            self.store.scan(),
            seq_of_hash=self.store.seq_of_hash,
            checkpoints=[*self.store.checkpoints(), *checkpoints],
            trusted_key=trusted_key,
        )

    def checkpoint(self, private_key: Ed25519PrivateKey) -> Checkpoint:
        """Sign the current head and keep the checkpoint in the store.

        Raises:
            AuditError: the ledger is empty.
        """
        head = self.store.head()
        if head.seq == 0:
            raise AuditError("the audit ledger is empty; nothing to checkpoint")
        checkpoint = sign_checkpoint(head, private_key)
        self.store.add_checkpoint(checkpoint)
        return checkpoint

    def checkpoints(self) -> list[Checkpoint]:
        """Checkpoints kept in the store, oldest first."""
        return self.store.checkpoints()

    @property
    def stats(self) -> LedgerStats:
        """Appends and group-commit transactions so far."""
        with self._lock:
            return LedgerStats(self._appends, self._commits, self._largest_batch)

    def pending(self) -> int:
        """Appends queued behind the current commit (for tests and metrics)."""
        with self._lock:
            return len(self._queue)

    def close(self) -> None:
        """Close the store's connections."""
        self.store.close()
