"""Signed checkpoints of the chain head, so removing the newest records is detectable.

A hash chain proves that nothing inside it changed, but deleting its last records leaves
a shorter chain that still verifies. A checkpoint is an ed25519 signature over
``(seq, hash, ts)`` of the head at some moment; ``verify`` then demands that the record
``seq`` still exists with that hash. Keep a copy of checkpoints outside the database
(the CLI writes one next to the key) so deleting the checkpoint rows does not help either.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import JsonValue

from aifr.audit.record import ChainHead, utc_timestamp
from aifr.capabilities import canonical_json
from aifr.errors import AuditError

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "load_or_create_signing_key",
    "public_key_hex",
    "sign_checkpoint",
]

CHECKPOINT_FORMAT = "aifr-audit-checkpoint/1"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement: "record ``seq`` of this ledger had hash ``hash`` at ``ts``"."""

    seq: int
    hash: str
    ts: str
    public_key: str
    signature: str

    def message(self) -> bytes:
        """The exact bytes that are signed."""
        body = {"format": CHECKPOINT_FORMAT, "hash": self.hash, "seq": self.seq, "ts": self.ts}
        return canonical_json(body).encode("utf-8")

    def is_valid(self, trusted_key: str | None = None) -> bool:
        """Whether the signature holds (and, given ``trusted_key``, was made by that key)."""
        if trusted_key is not None and trusted_key != self.public_key:
            return False
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.public_key))
            key.verify(bytes.fromhex(self.signature), self.message())
        except (InvalidSignature, ValueError):
            return False
        return True

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON form, as written to the checkpoint file."""
        return {
            "format": CHECKPOINT_FORMAT,
            "seq": self.seq,
            "hash": self.hash,
            "ts": self.ts,
            "public_key": self.public_key,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        """Parse :meth:`to_dict` output.

        Raises:
            AuditError: a field is missing or the format is unknown.
        """
        if data.get("format") != CHECKPOINT_FORMAT:
            raise AuditError(
                f"not an aifr audit checkpoint (format {data.get('format')!r})",
                format=str(data.get("format")),
            )
        try:
            return cls(
                seq=int(data["seq"]),
                hash=str(data["hash"]),
                ts=str(data["ts"]),
                public_key=str(data["public_key"]),
                signature=str(data["signature"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AuditError(f"malformed audit checkpoint: {exc!r}") from exc


def public_key_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The raw 32-byte public key in hex (how checkpoints name their signer)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def sign_checkpoint(head: ChainHead, private_key: Ed25519PrivateKey) -> Checkpoint:
    """Sign ``head`` now."""
    unsigned = Checkpoint(
        seq=head.seq, hash=head.hash, ts=utc_timestamp(), public_key="", signature=""
    )
    signature = private_key.sign(unsigned.message()).hex()
    return Checkpoint(
        seq=head.seq,
        hash=head.hash,
        ts=unsigned.ts,
        public_key=public_key_hex(private_key),
        signature=signature,
    )


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The ed25519 key in ``path`` (PKCS#8 PEM), created with mode 0600 on first use.

    The folder is created with mode 0700. A key file that others can read is refused:
    whoever can read it can sign a checkpoint for a rewritten ledger.

    Raises:
        AuditError: the file is readable by group or others, or is not an ed25519 key.
    """
    try:
        if not path.exists():
            return _create_key(path)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise AuditError(
                f"{path}: signing key is readable by others (mode {mode:o}); "
                f"run `chmod 600 {path}`",
                path=str(path),
            )
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise AuditError(f"{path}: cannot use the signing key: {exc.strerror}") from exc
    except ValueError as exc:
        raise AuditError(f"{path}: not a PEM private key", path=str(path)) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditError(f"{path}: not an ed25519 key", path=str(path))
    return key


def _create_key(path: Path) -> Ed25519PrivateKey:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Written aside, then linked into place: a second process creating the key at the
    # same moment finds either no file or a complete one, never half a key.
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(partial, path)
    except FileExistsError:
        return load_or_create_signing_key(path)
    finally:
        partial.unlink(missing_ok=True)
    return key
