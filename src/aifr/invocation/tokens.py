"""Bearer tokens for every HTTP surface (the REST API, the console, MCP over HTTP).

A token is ``aifr_`` plus 32 random bytes (256 bits, URL-safe base64), minted here and
shown once. Only its SHA-256 digest is stored, in the state database, so every server
and worker process of a project sees one set, and a copy of the database holds no usable
secret. A plain SHA-256 is the right hash here, not a slow one (argon2, scrypt): slow
hashes protect low-entropy passwords from guessing, and nobody can guess 256 random bits;
a fast lookup by digest also lets each request be checked in microseconds.

A token may expire (``expires_at``) and be revoked (``revoked_at``); both take effect on
the next request, in every process, since every request reads the store.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from aifr.errors import ConfigError, ErrorCode, TransportError
from aifr.invocation.identity import principal_problem
from aifr.invocation.ports import TokenRecord, TokenStore

__all__ = ["TOKEN_PREFIX", "TokenService", "TokenUse", "token_digest"]

TOKEN_PREFIX = "aifr_"  # noqa: S105  # the prefix minted tokens start with, not a secret


def token_digest(token: str) -> str:
    """The SHA-256 hex digest under which a token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenUse:
    """Why a presented token was refused: ``missing``, ``unknown``, ``expired`` or ``revoked``."""

    reason: str

    def error(self, *, hint: str) -> TransportError:
        """The 401 error for this refusal (``transport.unauthenticated``), naming the reason."""
        return TransportError(
            f"{self.reason} bearer token: send 'Authorization: Bearer <token>' ({hint})",
            code=ErrorCode.TRANSPORT_UNAUTHENTICATED,
            reason=self.reason,
        )


class TokenService:
    """Mints, verifies, lists and revokes tokens on a :class:`~aifr.invocation.TokenStore`."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store

    def create(
        self,
        principal: str,
        *,
        roles: Iterable[str] = (),
        operator: str | None = None,
        label: str = "",
        ttl_s: float | None = None,
    ) -> tuple[str, TokenRecord]:
        """Mint a token for ``principal``; returns the token (shown once) and its record.

        Raises:
            ConfigError: the principal or operator is no name, a role is empty, or
                ``ttl_s`` is not positive.
            StorageError: the store cannot be written.
        """
        names = {"principal": principal} | ({"operator": operator} if operator else {})
        for what, name in names.items():
            if (problem := principal_problem(name)) is not None:
                raise ConfigError(f"a token's {what} {name!r} {problem}", field=what)
        role_set = sorted(set(roles))
        for role in role_set:
            if (problem := principal_problem(role)) is not None:
                raise ConfigError(f"a token's role {role!r} {problem}", field="role")
        if ttl_s is not None and ttl_s <= 0:
            raise ConfigError(f"a token's lifetime must be positive, not {ttl_s}", field="ttl")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        record = TokenRecord(
            digest=token_digest(token),
            principal=principal,
            roles=tuple(role_set),
            operator=operator,
            label=label,
            created_at=now,
            expires_at=now + ttl_s if ttl_s is not None else None,
        )
        self.store.add(record)
        return token, record

    def check(self, token: str | None, *, now: float | None = None) -> TokenRecord | TokenUse:
        """The record of a usable token, or why it is not usable.

        Raises:
            StorageError: the store cannot be read.
        """
        if not token:
            return TokenUse("missing")
        return self.check_digest(token_digest(token), now=now)

    def check_digest(self, digest: str, *, now: float | None = None) -> TokenRecord | TokenUse:
        """:meth:`check` for a token known by its digest (a console session keeps only that).

        Raises:
            StorageError: the store cannot be read.
        """
        record = self.store.get(digest)
        # The lookup is by digest, so no timing reveals the token; compare anyway.
        if record is None or not hmac.compare_digest(record.digest, digest):
            return TokenUse("unknown")
        if record.revoked_at is not None:
            return TokenUse("revoked")
        if record.expires_at is not None and record.expires_at <= (now or time.time()):
            return TokenUse("expired")
        return record

    def verify(self, token: str) -> TokenRecord | None:
        """The record of a usable token, or ``None`` (unknown, expired or revoked)."""
        checked = self.check(token)
        return checked if isinstance(checked, TokenRecord) else None

    def records(self, *, include_revoked: bool = False) -> list[TokenRecord]:
        """Every token record, oldest first (revoked ones only when asked)."""
        records = self.store.list()
        return [r for r in records if include_revoked or r.revoked_at is None]

    def revoke(self, digest_prefix: str, *, now: float | None = None) -> TokenRecord:
        """Revoke the one live token whose digest starts with ``digest_prefix``.

        Raises:
            ConfigError: no live token, or more than one, matches the prefix.
            StorageError: the store cannot be written.
        """
        live = self.records()
        matches = [r for r in live if r.digest.startswith(digest_prefix)] if digest_prefix else []
        if len(matches) > 1:
            raise ConfigError(
                f"{len(matches)} tokens match {digest_prefix!r}; give a longer digest prefix",
                field="digest",
            )
        if not matches:
            # A token pasted by mistake is not echoed back into a terminal or a log.
            shown = (
                "the token given" if digest_prefix.startswith(TOKEN_PREFIX) else repr(digest_prefix)
            )
            raise ConfigError(
                f"no live token's digest starts with {shown}; revoke takes the "
                "digest prefix that 'aifr tokens list' shows, not the token",
                field="digest",
            )
        when = now or time.time()
        self.store.revoke(matches[0].digest, when)
        return matches[0].evolve(revoked_at=when)
