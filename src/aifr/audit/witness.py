"""The audit witness: signed checkpoints made automatically and shipped with the records.

A checkpoint kept only beside the ledger protects nothing from whoever can rewrite the
ledger: they rewrite the checkpoint too. The witness signs the head of what the outbox
has just shipped, every ``every_records`` records and every ``every_s`` seconds (when
anything new was shipped), keeps it in the store and sends it to the same sink after
the records it covers. Cutting the ledger's tail, or rewriting it from some record on,
is then caught by ``aifr audit verify`` held to the sink's newest checkpoint, without
anyone remembering to run ``aifr audit checkpoint``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aifr.audit.checkpoint import Checkpoint, sign_checkpoint
from aifr.audit.record import ChainHead
from aifr.errors import AuditError, ErrorCode

__all__ = ["Witness"]


@dataclass
class Witness:
    """When to sign the shipped head, and with which key.

    ``last_seq`` starts at the newest checkpoint already stored for the sink (the
    outbox sets it), so a restart does not sign the same head again.
    """

    private_key: Ed25519PrivateKey
    every_records: int = 1000
    every_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    last_seq: int = 0
    last_at: float = field(default=0.0)

    def __post_init__(self) -> None:
        if self.every_records < 1 or self.every_s <= 0:
            raise AuditError(
                "audit witness: checkpoint_every_records must be at least 1 and "
                f"checkpoint_every_s above 0, got {self.every_records} and {self.every_s}",
                code=ErrorCode.CONFIG_INVALID,
            )
        if not self.last_at:
            self.last_at = self.clock()

    def is_due(self, shipped_seq: int) -> bool:
        """Whether the head shipped up to ``shipped_seq`` should be signed now."""
        if shipped_seq <= self.last_seq:
            return False
        if shipped_seq - self.last_seq >= self.every_records:
            return True
        return self.clock() - self.last_at >= self.every_s

    def sign(self, head: ChainHead) -> Checkpoint:
        """Sign ``head`` (the last shipped record)."""
        return sign_checkpoint(head, self.private_key)

    def signed(self, checkpoint: Checkpoint) -> None:
        """Note that ``checkpoint`` reached the sink: the next one is counted from it."""
        self.last_seq = checkpoint.seq
        self.last_at = self.clock()
