"""Checkpoints: signatures, their JSON form, and the signing key file."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest

from aifr.audit import (
    ChainHead,
    Checkpoint,
    load_or_create_signing_key,
    public_key_hex,
    sign_checkpoint,
)
from aifr.errors import ErrorCode


def test_the_key_is_created_once_with_mode_0600_and_reloaded_after(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit-ed25519.pem"
    first = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert public_key_hex(load_or_create_signing_key(path)) == public_key_hex(first)
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.pem"
    load_or_create_signing_key(path)
    path.chmod(0o644)
    with pytest.raises(Exception) as caught:
        load_or_create_signing_key(path)
    assert caught.value.code == ErrorCode.AUDIT_FAILED  # type: ignore[attr-defined]


def test_a_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.pem"
    path.write_text("not a key")
    path.chmod(0o600)
    with pytest.raises(Exception) as caught:
        load_or_create_signing_key(path)
    assert caught.value.code == ErrorCode.AUDIT_FAILED  # type: ignore[attr-defined]


def test_a_signed_checkpoint_round_trips_and_any_change_breaks_its_signature(
    tmp_path: Path,
) -> None:
    key = load_or_create_signing_key(tmp_path / "k.pem")
    checkpoint = sign_checkpoint(ChainHead(42, "a" * 64), key)
    assert checkpoint.is_valid(public_key_hex(key))
    assert Checkpoint.from_dict(checkpoint.to_dict()) == checkpoint
    assert not dataclasses.replace(checkpoint, seq=41).is_valid()
    assert not dataclasses.replace(checkpoint, hash="b" * 64).is_valid()
    assert not checkpoint.is_valid("00" * 32)


def test_a_document_that_is_not_a_checkpoint_is_refused() -> None:
    with pytest.raises(Exception) as caught:
        Checkpoint.from_dict({"format": "something-else"})
    assert caught.value.code == ErrorCode.AUDIT_FAILED  # type: ignore[attr-defined]
