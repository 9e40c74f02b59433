"""When the audit witness signs: every N shipped records, and every T seconds of news."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aifr.audit import ChainHead, Witness
from aifr.errors import AifrError, ErrorCode


def test_the_witness_is_due_every_n_records_and_after_t_seconds_with_something_new() -> None:
    now = [100.0]
    witness = Witness(
        Ed25519PrivateKey.generate(), every_records=5, every_s=60, clock=lambda: now[0]
    )
    assert not witness.is_due(0)
    assert not witness.is_due(4)
    assert witness.is_due(5)
    checkpoint = witness.sign(ChainHead(5, "ab" * 32))
    assert checkpoint.is_valid() and checkpoint.seq == 5
    witness.signed(checkpoint)
    assert not witness.is_due(5)
    assert not witness.is_due(6)
    now[0] += 61
    assert witness.is_due(6)
    assert not witness.is_due(5)  # nothing new since the last checkpoint: no timer tick


def test_a_witness_that_would_never_sign_is_refused() -> None:
    with pytest.raises(AifrError) as caught:
        Witness(Ed25519PrivateKey.generate(), every_records=0)
    assert caught.value.code == ErrorCode.CONFIG_INVALID
