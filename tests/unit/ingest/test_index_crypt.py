"""The index key: sources, key check, sealed rows bound to their identity, and escrow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aifr.errors import ErrorCode, IngestError
from aifr.ingest import (
    INDEX_KEY_NAME,
    IndexKey,
    KeyFileProvider,
    create_key_file,
    generate_index_key,
    resolve_index_key,
    unwrap_escrow,
    write_escrow,
)
from aifr.invocation import EnvSecretProvider, KeyringSecretProvider
from keyring_kit import memory_keyring


def test_no_key_in_any_source_is_key_missing_naming_the_sources(tmp_path: Path) -> None:
    providers = [EnvSecretProvider({}), KeyFileProvider(tmp_path / "index.key")]
    with pytest.raises(IngestError) as caught:
        resolve_index_key(providers)
    assert caught.value.code is ErrorCode.INGEST_KEY_MISSING
    assert caught.value.details["sources"] == ["env", "file"]


def test_a_malformed_key_is_key_invalid_not_a_weaker_key() -> None:
    for bad in ("short", "Zm9v", "x" * 64):
        with pytest.raises(IngestError) as caught:
            resolve_index_key([EnvSecretProvider({INDEX_KEY_NAME: bad})])
        assert caught.value.code is ErrorCode.INGEST_KEY_INVALID


def test_the_first_source_holding_the_key_wins_and_hex_keys_are_accepted(tmp_path: Path) -> None:
    text = create_key_file(tmp_path / "keys" / "index.key")
    assert (tmp_path / "keys" / "index.key").stat().st_mode & 0o777 == 0o600
    from_file = resolve_index_key(
        [EnvSecretProvider({}), KeyFileProvider(tmp_path / "keys" / "index.key")]
    )
    assert from_file.source == "file"
    assert from_file.export() == text
    hex_key = os.urandom(32).hex()
    from_env = resolve_index_key(
        [
            EnvSecretProvider({INDEX_KEY_NAME: hex_key}),
            KeyFileProvider(tmp_path / "keys" / "index.key"),
        ]
    )
    assert from_env.source == "env"
    assert from_env.check_value != from_file.check_value


def test_the_key_can_come_from_the_os_keyring() -> None:
    text = generate_index_key()
    with memory_keyring("aifr-test", {INDEX_KEY_NAME: text}):
        key = resolve_index_key([EnvSecretProvider({}), KeyringSecretProvider("aifr-test")])
    assert key.source == "keyring"
    assert key.export() == text


def test_creating_a_key_file_never_overwrites_an_existing_key(tmp_path: Path) -> None:
    create_key_file(tmp_path / "index.key")
    with pytest.raises(IngestError):
        create_key_file(tmp_path / "index.key")


def test_a_sealed_row_opens_only_under_its_own_identity() -> None:
    cipher = IndexKey(os.urandom(32), source="test").cipher()
    row = cipher.name("file", "repo", "a.py")
    sealed = cipher.seal("chunks", row, b"secret text")
    assert b"secret text" not in sealed
    assert cipher.open("chunks", row, sealed) == b"secret text"
    other = cipher.name("file", "repo", "b.py")
    for table, identity in (("chunks", other), ("files", row)):
        with pytest.raises(IngestError) as caught:
            cipher.open(table, identity, sealed)
        assert caught.value.code is ErrorCode.INGEST_INDEX_TAMPERED
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(IngestError):
        cipher.open("chunks", row, flipped)


def test_sealing_twice_gives_different_ciphertexts() -> None:
    cipher = IndexKey(os.urandom(32), source="test").cipher()
    row = cipher.name("x")
    assert cipher.seal("t", row, b"same") != cipher.seal("t", row, b"same")


def test_row_names_hide_what_they_name_and_depend_on_the_key() -> None:
    one = IndexKey(os.urandom(32), source="a").cipher()
    two = IndexKey(os.urandom(32), source="b").cipher()
    assert one.name("repo", "payroll") == one.name("repo", "payroll")
    assert one.name("repo", "payroll") != two.name("repo", "payroll")
    assert b"payroll" not in one.name("repo", "payroll")


def _rsa_pair(tmp_path: Path) -> tuple[rsa.RSAPrivateKey, Path]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp_path / "recovery.pub.pem"
    public.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def test_escrow_wraps_the_key_for_the_recovery_key_holder_only(tmp_path: Path) -> None:
    private, public = _rsa_pair(tmp_path)
    text = generate_index_key()
    write_escrow(text, public, tmp_path / "key.escrow")
    assert text.encode() not in (tmp_path / "key.escrow").read_bytes()
    assert unwrap_escrow(tmp_path / "key.escrow", private) == text
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(IngestError) as caught:
        unwrap_escrow(tmp_path / "key.escrow", stranger)
    assert caught.value.code is ErrorCode.INGEST_KEY_INVALID


def test_escrow_to_something_that_is_not_an_rsa_public_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(IngestError):
        write_escrow(generate_index_key(), tmp_path / "bad.pem", tmp_path / "key.escrow")
    assert not (tmp_path / "key.escrow").exists()
