"""Who is calling: MCP identities and the HTTP bearer-token middleware.

An :class:`McpIdentity` is the principal the runtime sees, its roles, and the
``operator``: the human behind the client who may answer approval prompts. Local
transports take it from configuration (stdio) or from the peer's uid (Unix socket);
HTTP takes it from a bearer token, checked by the one token system of every HTTP
surface (:class:`~aifr.invocation.TokenService`, digests in the state database).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from aifr.errors import AifrError, ErrorCode, TransportError, error_payload
from aifr.invocation import TokenRecord, TokenService

__all__ = [
    "IDENTITY_SCOPE_KEY",
    "BearerAuthMiddleware",
    "McpIdentity",
    "identity_of",
]

logger = logging.getLogger(__name__)

IDENTITY_SCOPE_KEY = "aifr.identity"


@dataclass(frozen=True, slots=True)
class McpIdentity:
    """The caller of an MCP session, as the runtime and policy see it."""

    principal: str
    roles: frozenset[str] = frozenset()
    operator: str | None = None
    authenticated: bool = False
    """True when a bearer token proved the identity (HTTP); local ones are configured."""

    @property
    def approver(self) -> str:
        """Whose approval an accepted elicitation records: the operator, else the caller."""
        return self.operator or self.principal


def identity_of(record: TokenRecord) -> McpIdentity:
    """The identity a request carrying the token of ``record`` acts as."""
    return McpIdentity(
        record.principal, frozenset(record.roles), record.operator, authenticated=True
    )


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

    def __init__(self, app: ASGIApp, tokens: TokenService) -> None:
        self.app = app
        self.tokens = tokens

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
            checked = self.tokens.check(token)
        except AifrError as exc:
            logger.exception("token store unreadable")
            await _json_response(send, 503, exc)
            return
        if not isinstance(checked, TokenRecord):
            error = checked.error(hint="mint one with 'aifr tokens create --principal NAME'")
            await _json_response(send, 401, error, token_given=token is not None)
            return
        identity = identity_of(checked)
        await self.app({**scope, IDENTITY_SCOPE_KEY: identity}, receive, send)


WELL_KNOWN = "/.well-known/"
_NO_OAUTH = TransportError(
    "this server has no OAuth metadata: it takes bearer tokens minted with "
    "'aifr tokens create --principal NAME', sent as 'Authorization: Bearer <token>'",
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
