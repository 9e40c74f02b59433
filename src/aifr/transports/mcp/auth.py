"""Who is calling: MCP identities, the bearer-token file and the HTTP auth middleware.

An :class:`McpIdentity` is the principal the runtime sees, its roles, and the
``operator``: the human behind the client who may answer approval prompts. Local
transports take it from configuration (stdio) or from the peer's uid (Unix socket);
HTTP takes it from a bearer token.

Tokens live in ``.aifr/tokens.json`` (mode 0600) as ``sha256(token) -> identity``, so
the file never holds a usable secret. :meth:`TokenStore.create` mints one and shows it
exactly once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from aifr.errors import AifrError, ConfigError, ErrorCode, TransportError, error_payload
from aifr.invocation.identity import principal_problem

__all__ = [
    "IDENTITY_SCOPE_KEY",
    "TOKEN_PREFIX",
    "BearerAuthMiddleware",
    "McpIdentity",
    "TokenRecord",
    "TokenStore",
    "token_digest",
]

logger = logging.getLogger(__name__)

IDENTITY_SCOPE_KEY = "aifr.identity"
TOKEN_PREFIX = "aifr_"  # noqa: S105  # the prefix minted tokens start with, not a secret
_FILE_VERSION = 1


@dataclass(frozen=True, slots=True)
class McpIdentity:
    """The caller of an MCP session, as the runtime and policy see it."""

    principal: str
    roles: frozenset[str] = frozenset()
    operator: str | None = None

    @property
    def approver(self) -> str:
        """Whose approval an accepted elicitation records: the operator, else the caller."""
        return self.operator or self.principal


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One minted token, without the token itself."""

    digest: str
    principal: str
    roles: tuple[str, ...] = ()
    operator: str | None = None
    label: str = ""
    created_at: float = field(default=0.0)

    @property
    def identity(self) -> McpIdentity:
        """The identity a request carrying this token acts as."""
        return McpIdentity(self.principal, frozenset(self.roles), self.operator)

    def to_json(self) -> dict[str, Any]:
        """The record as stored in the token file (without its digest key)."""
        return {
            "principal": self.principal,
            "roles": list(self.roles),
            "operator": self.operator,
            "label": self.label,
            "created_at": self.created_at,
        }


def token_digest(token: str) -> str:
    """The SHA-256 hex digest under which a token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _record(digest: str, raw: Any, path: Path) -> TokenRecord:
    if not isinstance(raw, dict) or not isinstance(raw.get("principal"), str):
        raise ConfigError(
            f"{path}: token entry {digest[:12]}... needs a string 'principal'", file=str(path)
        )
    roles = raw.get("roles") or []
    operator = raw.get("operator")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise ConfigError(
            f"{path}: token entry {digest[:12]}...: 'roles' must be a list of strings",
            file=str(path),
        )
    if operator is not None and not isinstance(operator, str):
        raise ConfigError(
            f"{path}: token entry {digest[:12]}...: 'operator' must be a string", file=str(path)
        )
    return TokenRecord(
        digest=digest,
        principal=raw["principal"],
        roles=tuple(roles),
        operator=operator,
        label=str(raw.get("label", "")),
        created_at=float(raw.get("created_at", 0.0)),
    )


class TokenStore:
    """The bearer tokens accepted by ``aifr mcp --transport http``.

    The file is re-read when its modification time changes, so a token minted or
    revoked while the server runs takes effect on the next request.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[str, TokenRecord] = {}
        self._stamp: tuple[int, int] | None = None

    def _load(self) -> dict[str, TokenRecord]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._records, self._stamp = {}, None
            return self._records
        except OSError as exc:
            raise ConfigError(
                f"{self.path}: cannot read: {exc.strerror}", file=str(self.path)
            ) from exc
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return self._records
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.path}: not a token file: {exc}", file=str(self.path)) from exc
        tokens = document.get("tokens") if isinstance(document, dict) else None
        if not isinstance(tokens, dict):
            raise ConfigError(f"{self.path}: expected an object with 'tokens'", file=str(self.path))
        self._records = {d: _record(d, raw, self.path) for d, raw in tokens.items()}
        self._stamp = stamp
        return self._records

    def records(self) -> list[TokenRecord]:
        """Every stored token record, oldest first.

        Raises:
            ConfigError: the token file is malformed.
        """
        return sorted(self._load().values(), key=lambda r: r.created_at)

    def verify(self, token: str) -> McpIdentity | None:
        """The identity of a presented token, or ``None`` when it is unknown.

        Raises:
            ConfigError: the token file is malformed.
        """
        record = self._load().get(token_digest(token))
        return record.identity if record is not None else None

    def create(
        self,
        principal: str,
        *,
        roles: Iterable[str] = (),
        operator: str | None = None,
        label: str = "",
    ) -> tuple[str, TokenRecord]:
        """Mint a token for ``principal``; returns the token (shown once) and its record.

        Raises:
            ConfigError: the principal or operator is no name (see
                :func:`~aifr.invocation.identity.principal_problem`), or the token file
                cannot be written.
        """
        names = {"principal": principal} | ({"operator": operator} if operator else {})
        for what, name in names.items():
            if (problem := principal_problem(name)) is not None:
                raise ConfigError(f"a token's {what} {name!r} {problem}", field=what)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(
            digest=token_digest(token),
            principal=principal,
            roles=tuple(sorted(set(roles))),
            operator=operator,
            label=label,
            created_at=time.time(),
        )
        records = {**self._load(), record.digest: record}
        self._write(records)
        return token, record

    def revoke(self, digest_prefix: str) -> TokenRecord:
        """Remove the one token whose digest starts with ``digest_prefix``.

        Raises:
            ConfigError: no token, or more than one, matches the prefix.
        """
        records = self._load()
        matches = [d for d in records if d.startswith(digest_prefix)] if digest_prefix else []
        if len(matches) > 1:
            raise ConfigError(
                f"{len(matches)} tokens match {digest_prefix!r}; give a longer digest prefix",
                field="digest",
            )
        if not matches:  # a longer prefix cannot help here: say where the prefixes are
            raise ConfigError(
                f"no token's digest starts with {digest_prefix!r}; revoke takes the digest "
                "prefix that 'aifr mcp token list' shows, not the token",
                field="digest",
            )
        removed = records[matches[0]]
        self._write({d: r for d, r in records.items() if d != matches[0]})
        return removed

    def _write(self, records: dict[str, TokenRecord]) -> None:
        document = {
            "version": _FILE_VERSION,
            "tokens": {d: r.to_json() for d, r in records.items()},
        }
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            raise ConfigError(
                f"{self.path}: cannot write: {exc.strerror}", file=str(self.path)
            ) from exc
        self._stamp = None


def _bearer(scope: Scope) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    return None


class BearerAuthMiddleware:
    """ASGI middleware: every HTTP request needs a known bearer token, else 401.

    The resolved :class:`McpIdentity` is put in ``scope[IDENTITY_SCOPE_KEY]``, where
    the MCP handlers read it through the request they are given.

    Paths under ``/.well-known/`` get 404 without a token: an MCP client that was not
    given a token looks there for OAuth metadata (RFC 9728, RFC 8414), and a 401 would
    send it round again, where a 404 tells it this server has none. A rejected token
    gets ``error="invalid_token"`` in its challenge (RFC 6750), so the client knows to
    replace it rather than to add one.
    """

    def __init__(self, app: ASGIApp, store: TokenStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate HTTP requests; pass lifespan and other scopes through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if str(scope.get("path", "")).startswith(WELL_KNOWN):
            await _json_response(send, 404, _NO_OAUTH)
            return
        token = _bearer(scope)
        try:
            identity = self.store.verify(token) if token is not None else None
        except ConfigError as exc:
            logger.exception("token file unreadable")
            await _json_response(send, 503, exc)
            return
        if identity is None:
            reason = "unknown bearer token" if token is not None else "missing bearer token"
            error = TransportError(
                f"{reason}: send 'Authorization: Bearer <token>' "
                "(mint one with 'aifr mcp token create --principal NAME')",
                code=ErrorCode.TRANSPORT_UNAUTHENTICATED,
            )
            await _json_response(send, 401, error, token_given=token is not None)
            return
        await self.app({**scope, IDENTITY_SCOPE_KEY: identity}, receive, send)


WELL_KNOWN = "/.well-known/"
_NO_OAUTH = TransportError(
    "this server has no OAuth metadata: it takes bearer tokens minted with "
    "'aifr mcp token create --principal NAME', sent as 'Authorization: Bearer <token>'",
    code=ErrorCode.TRANSPORT_NOT_FOUND,
)


async def _json_response(
    send: Send, status: int, error: AifrError, *, token_given: bool = False
) -> None:
    body = json.dumps(error_payload(error)).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    if status == 401:
        challenge = b'Bearer realm="aifr"' + (b', error="invalid_token"' if token_given else b"")
        headers.append((b"www-authenticate", challenge))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
