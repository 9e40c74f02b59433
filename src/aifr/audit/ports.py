"""What the audit ledger needs from storage and from an external sink.

``AuditStore`` is implemented per backend in ``aifr.storage`` (SQLite now, PostgreSQL
later); the ledger never sees SQL. The store owns transactions: it hands the chain head
as it stands *inside* the write transaction to a :data:`ChainBuilder` (read there, or
remembered from its own last commit and checked by the insert), so several processes
sharing one database still extend one chain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from aifr.audit.checkpoint import Checkpoint
from aifr.audit.record import AuditRecord, ChainHead

__all__ = ["AuditStore", "ChainBuilder", "Sink"]

ChainBuilder = Callable[[ChainHead], list[AuditRecord]]
"""Given the current head, the new records that extend it (pure; may be called again)."""


class AuditStore(Protocol):
    """Durable, ordered storage of audit records, checkpoints and shipping cursors."""

    def append(self, build: ChainBuilder) -> list[AuditRecord]:
        """In one write transaction: read the head, insert ``build(head)``, commit durably."""
        ...

    def append_in(self, conn: object, build: ChainBuilder) -> list[AuditRecord]:
        """Like :meth:`append`, inside the caller's open write transaction ``conn``."""
        ...

    def head(self) -> ChainHead:
        """The last committed record's seq and hash (``0`` and genesis when empty)."""
        ...

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
        """Records in seq order (or reversed), filtered by time range and principal."""
        ...

    def get(self, record_id: str) -> AuditRecord | None:
        """The record with id ``record_id``."""
        ...

    def seq_of_hash(self, record_hash: str) -> int | None:
        """The lowest seq whose stored hash is ``record_hash`` (used to explain a break)."""
        ...

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Keep a signed checkpoint."""
        ...

    def checkpoints(self) -> list[Checkpoint]:
        """Every kept checkpoint, oldest first."""
        ...

    def shipped_seq(self, sink: str) -> int:
        """The last seq delivered to ``sink`` (``0`` when nothing was)."""
        ...

    def mark_shipped(self, sink: str, seq: int) -> None:
        """Durably record that everything up to ``seq`` reached ``sink`` (never moves back)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class Sink(Protocol):
    """An external destination for audit records (NATS JetStream, an HTTP collector).

    ``send`` delivers a batch in order and returns only once the sink acknowledged all of
    it; it raises ``AuditError`` when the sink is unreachable or refuses. Records carry
    their ``id`` so a sink can drop a redelivery after a crash between ack and cursor.
    """

    name: str

    async def send(self, records: Sequence[AuditRecord]) -> None:
        """Deliver ``records`` in order, or raise."""
        ...

    async def send_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Deliver a signed checkpoint of records already delivered, or raise."""
        ...

    async def aclose(self) -> None:
        """Close connections."""
        ...
