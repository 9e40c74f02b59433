"""The durable outbox: ship the ledger to an external sink in order, surviving outages.

The ledger itself is the buffer (the seed's "offline retry buffer"): records are durable
before anyone ships them, so nothing is copied. Each sink has a cursor, the last seq it
acknowledged, stored in the same database. Shipping reads the records after the cursor
in seq order, sends a batch, waits for the sink's ack and only then moves the cursor.
While the sink is down the cursor stays put and retries back off; a restarted process
resumes from the stored cursor, so records arrive in order, without gaps, and at most
the one batch in flight at a crash is offered again (with the same record ids, which
the sinks use to drop it).
"""

from __future__ import annotations

import asyncio
import logging

from aifr.audit.ledger import AuditLedger
from aifr.audit.ports import Sink
from aifr.audit.record import AuditRecord, ChainHead
from aifr.audit.witness import Witness
from aifr.errors import AifrError, AuditError

__all__ = ["Outbox"]

logger = logging.getLogger(__name__)


class Outbox:
    """Ships one ledger to one sink, from the sink's stored cursor onwards."""

    def __init__(
        self,
        ledger: AuditLedger,
        sink: Sink,
        *,
        batch_size: int = 100,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        witness: Witness | None = None,
    ) -> None:
        if batch_size < 1:
            raise AuditError(f"outbox batch_size must be at least 1, got {batch_size}")
        self.ledger = ledger
        self.sink = sink
        self.batch_size = batch_size
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.witness = witness
        if witness is not None:
            signed = [c.seq for c in ledger.checkpoints() if c.seq <= self.cursor()]
            witness.last_seq = max(signed, default=witness.last_seq)

    def cursor(self) -> int:
        """The last seq the sink acknowledged."""
        return self.ledger.store.shipped_seq(self.sink.name)

    def backlog(self) -> int:
        """How many records wait to be shipped."""
        return max(0, self.ledger.head().seq - self.cursor())

    def _next_batch(self) -> list[AuditRecord]:
        """The next records to ship, cut where the witness's next checkpoint falls."""
        cursor = self.cursor()
        limit = self.batch_size
        if self.witness is not None:
            limit = max(1, min(limit, self.witness.last_seq + self.witness.every_records - cursor))
        return list(self.ledger.records(after_seq=cursor, limit=limit))

    async def ship_once(self) -> int:
        """Ship every record after the cursor, batch by batch; returns how many.

        Raises:
            AuditError: the sink failed (``audit.sink_unavailable``); the cursor stays at
                the last acknowledged batch.
            StorageError: the database failed.
        """
        shipped = 0
        while True:
            batch = await asyncio.to_thread(self._next_batch)
            if not batch:
                await self._witness(None)
                return shipped
            await self.sink.send(batch)
            await asyncio.to_thread(self.ledger.store.mark_shipped, self.sink.name, batch[-1].seq)
            shipped += len(batch)
            await self._witness(batch[-1])

    async def checkpoint_shipped(self) -> None:
        """Sign and ship the shipped head now, unless it is already checkpointed.

        A one-off ``aifr audit ship`` ends with this: no later timer would sign it.

        Raises:
            AuditError: the sink refused the checkpoint.
        """
        await self._witness(None, force=True)

    async def _witness(self, last: AuditRecord | None, *, force: bool = False) -> None:
        """Sign and ship the shipped head when the witness says it is due.

        ``last`` is the record just shipped; ``None`` when caught up, where the head is
        read back so that a quiet ledger still gets its checkpoint every ``every_s``.
        The checkpoint is kept in the store before it is sent, and the witness counts
        from it only once the sink acknowledged it, so a failed send is retried.
        """
        witness = self.witness
        if witness is None:
            return
        seq = last.seq if last is not None else self.cursor()
        if not (witness.is_due(seq) or (force and seq > witness.last_seq)):
            return
        if last is None:
            found = await asyncio.to_thread(
                lambda: list(self.ledger.records(after_seq=seq - 1, limit=1))
            )
            if not found:
                return
            last = found[0]
        checkpoint = witness.sign(ChainHead(last.seq, last.hash))
        await asyncio.to_thread(self.ledger.store.add_checkpoint, checkpoint)
        await self.sink.send_checkpoint(checkpoint)
        witness.signed(checkpoint)

    async def run(self, stop: asyncio.Event, *, poll_s: float = 1.0) -> int:
        """Ship until ``stop`` is set: poll when caught up, back off while the sink is down.

        Returns how many records were shipped.
        """
        shipped = 0
        delay = self.retry_initial_s
        while not stop.is_set():
            try:
                shipped += await self.ship_once()
            except AifrError as exc:
                logger.warning(
                    "audit sink %s: %s; retrying in %.1fs", self.sink.name, exc.message, delay
                )
                await _wait(stop, delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            delay = self.retry_initial_s
            await _wait(stop, poll_s)
        return shipped


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stop`` is set, whichever comes first."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return
