"""The index key: where it comes from, how rows are sealed with it, and its escrow.

Every row of the index (chunk text, metadata, vector) is sealed with AES-256-GCM under
a random 96-bit nonce, with associated data naming the table and the row's identity,
so a row copied onto another row fails authentication instead of reading as valid.
Row identities are keyed hashes (HMAC-SHA-256) of repository and path, so the file
itself holds no path or repository name in the clear.

Two keys are derived from the one index key by HKDF (sealing and naming), and a key
check value (an HMAC of a fixed label) is stored beside the rows: a wrong key is
refused at open with ``ingest.key_invalid``, never read as garbage.

Recovery escrow is off by default. When a recovery public key (RSA, PEM) is
configured, the index key is also written wrapped with RSA-OAEP-SHA-256, which its
holder can unwrap with standard tools (``openssl pkeyutl -decrypt``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from aifr.errors import ErrorCode, IngestError
from aifr.invocation import SecretProvider

__all__ = [
    "INDEX_KEY_NAME",
    "IndexKey",
    "KeyFileProvider",
    "RowCipher",
    "create_key_file",
    "generate_index_key",
    "resolve_index_key",
    "unwrap_escrow",
    "write_escrow",
]

INDEX_KEY_NAME = "AIFR_INDEX_KEY"
"""The secret name the key is looked up under (environment variable, file, keyring entry)."""

_KEY_BYTES = 32
_NONCE_BYTES = 12
_CHECK_LABEL = b"aifr-index/v1/key-check"


class IndexKey:
    """The 32-byte index key, with the sealing and naming keys derived from it."""

    __slots__ = ("_raw", "_seal", "_tag", "check_value", "source")

    def __init__(self, raw: bytes, *, source: str) -> None:
        if len(raw) != _KEY_BYTES:
            raise IngestError(
                f"the index key from {source} is {len(raw)} bytes; it must be {_KEY_BYTES}",
                code=ErrorCode.INGEST_KEY_INVALID,
                source=source,
            )
        self.source = source
        self._raw = raw
        self._seal = _derive(raw, b"aifr-index/v1/seal")
        self._tag = _derive(raw, b"aifr-index/v1/name")
        self.check_value = hmac.new(raw, _CHECK_LABEL, hashlib.sha256).hexdigest()

    def export(self) -> str:
        """The key as the text the key sources hold (URL-safe base64), for escrow."""
        return base64.urlsafe_b64encode(self._raw).decode()

    def cipher(self) -> RowCipher:
        """The row cipher under this key."""
        return RowCipher(self._seal, self._tag)


def _derive(raw: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=None, info=info).derive(raw)


class RowCipher:
    """Seals and opens index rows; names rows by keyed hash."""

    __slots__ = ("_aead", "_tag")

    def __init__(self, seal_key: bytes, tag_key: bytes) -> None:
        self._aead = AESGCM(seal_key)
        self._tag = tag_key

    def name(self, *parts: str) -> bytes:
        """A 16-byte keyed hash of ``parts``: a row identity that hides what it names."""
        message = "\x00".join(parts).encode()
        return hmac.new(self._tag, message, hashlib.sha256).digest()[:16]

    def seal(self, table: str, row_id: bytes, plaintext: bytes) -> bytes:
        """Nonce followed by the AES-GCM ciphertext, bound to ``table`` and ``row_id``."""
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, _aad(table, row_id))

    def open(self, table: str, row_id: bytes, blob: bytes) -> bytes:
        """The plaintext of a sealed row.

        Raises:
            IngestError: ``ingest.index_tampered``: the row does not authenticate (it was
                changed, or moved from another row).
        """
        try:
            return self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], _aad(table, row_id))
        except InvalidTag:
            raise IngestError(
                f"an index row in {table!r} failed authentication: the index was modified",
                code=ErrorCode.INGEST_INDEX_TAMPERED,
                table=table,
            ) from None


def _aad(table: str, row_id: bytes) -> bytes:
    return b"aifr-index/v1\x00" + table.encode() + b"\x00" + row_id


def generate_index_key() -> str:
    """A fresh random key, as the text the key sources hold (URL-safe base64)."""
    return base64.urlsafe_b64encode(os.urandom(_KEY_BYTES)).decode()


def _decode(text: str, source: str) -> IndexKey:
    value = text.strip()
    try:
        raw = (
            bytes.fromhex(value)
            if len(value) == 2 * _KEY_BYTES
            else base64.urlsafe_b64decode(value.encode())
        )
    except (ValueError, binascii.Error):
        raise IngestError(
            f"the index key from {source} is neither 64 hex digits nor URL-safe base64",
            code=ErrorCode.INGEST_KEY_INVALID,
            source=source,
        ) from None
    return IndexKey(raw, source=source)


def resolve_index_key(providers: Sequence[SecretProvider]) -> IndexKey:
    """The key from the first provider that holds ``AIFR_INDEX_KEY``.

    Raises:
        IngestError: ``ingest.key_missing`` when no provider holds it,
            ``ingest.key_invalid`` when the value is not a 32-byte key.
        ConfigError: a provider cannot be used (the keyring extra is missing).
    """
    for provider in providers:
        value = provider.lookup(INDEX_KEY_NAME)
        if value is not None:
            return _decode(value, provider.name)
    names = ", ".join(provider.name for provider in providers) or "none configured"
    raise IngestError(
        f"no index key: {INDEX_KEY_NAME} is in none of the key sources ({names}); "
        "set it, or run `aifr ingest` once to create one in the key file",
        code=ErrorCode.INGEST_KEY_MISSING,
        sources=[provider.name for provider in providers],
    )


def write_escrow(key_text: str, public_key_pem: Path, target: Path) -> None:
    """Write ``key_text`` wrapped with RSA-OAEP-SHA-256 for the holder of ``public_key_pem``.

    Raises:
        IngestError: the recovery key cannot be read or is not an RSA public key.
    """
    try:
        public_key = load_pem_public_key(public_key_pem.read_bytes())
    except (OSError, ValueError) as exc:
        raise IngestError(
            f"the key escrow recipient {public_key_pem} cannot be read: {exc}",
            path=str(public_key_pem),
        ) from exc
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise IngestError(
            f"the key escrow recipient {public_key_pem} is not an RSA public key",
            path=str(public_key_pem),
        )
    wrapped = public_key.encrypt(key_text.encode(), _oaep())
    _write_private(target, wrapped)


def unwrap_escrow(escrow: Path, private_key: rsa.RSAPrivateKey) -> str:
    """The key text an escrow file holds, for the holder of the recovery private key.

    Raises:
        IngestError: ``ingest.key_invalid``: this private key does not open the escrow.
    """
    try:
        return private_key.decrypt(escrow.read_bytes(), _oaep()).decode()
    except (OSError, ValueError) as exc:
        raise IngestError(
            f"the key escrow {escrow} cannot be opened with this private key",
            code=ErrorCode.INGEST_KEY_INVALID,
            path=str(escrow),
        ) from exc


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _write_private(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` readable by its owner only (0600, created that way)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        raise IngestError(f"cannot write {target}: {exc}", path=str(target)) from exc


def create_key_file(target: Path) -> str:
    """Create ``target`` holding a fresh key (0600); refuse to overwrite an existing one.

    Raises:
        IngestError: the file exists already or cannot be written.
    """
    key_text = generate_index_key()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise IngestError(f"cannot create the index key file {target}: {exc}") from exc
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key_text + "\n")
    return key_text


class KeyFileProvider:
    """The index key from one file (``ingest.key_file``), as a secret provider."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path

    def lookup(self, secret_name: str) -> str | None:
        """The file's text for ``AIFR_INDEX_KEY``, or ``None`` when there is no file.

        Raises:
            IngestError: the file exists but cannot be read.
        """
        if secret_name != INDEX_KEY_NAME or not self.path.exists():
            return None
        try:
            return self.path.read_text()
        except OSError as exc:
            raise IngestError(f"cannot read the index key file {self.path}: {exc}") from exc
