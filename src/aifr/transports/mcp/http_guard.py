"""What the SDK's streamable HTTP transport answers badly, answered before it sees the request.

Each case below is a client mistake (or a client from another protocol revision) that
the SDK met with a hang, a misrouted answer or an error no client can act on:

- two requests of one session in flight under the same id, or under ids whose text is
  the same (``1`` and ``"1"``, distinct in JSON-RPC): the SDK keys a request's answer
  stream by the id's text, so the second overwrote the first's, one POST got the other's
  answer and the other POST never ended. The second now waits until the first has been
  answered and is then served, so each gets its own answer. (Refusing it instead would
  also refuse a client that reuses an id as soon as it has read the answer, since the
  SDK finishes the first POST a moment after the answer went out.)
- a body that is JSON but not one JSON-RPC message (a batch, an object without
  ``jsonrpc``): the SDK answered ``-32602`` with pages of pydantic text. It is now
  ``-32600`` with a line saying what a body must be, and the request's own id when it
  has a method and a usable id, as on stdio (:mod:`.framing`). Batches were allowed by
  protocol 2025-03-26 and removed in 2025-06-18; the SDK never served them over HTTP;
- an ``MCP-Protocol-Version`` header naming a version this server does not speak: the
  SDK took it for a 2026-07-28 stateless request and complained about missing
  ``_meta`` envelope keys. It is now 400 with the SDK's ``UNSUPPORTED_PROTOCOL_VERSION``
  code, naming the requested and the supported versions (also in ``data``, as the
  2026-07-28 revision defines it), so a client can fall back to one of them;
- a POST whose ``Content-Type`` is not ``application/json``: the SDK answered 400 with
  plain text; it is now 415 with a JSON-RPC error.

Everything else passes through untouched, including bodies that are not JSON at all
(the SDK's ``-32700`` names the position) and bodies over the SDK's size limit (413).
The body is parsed once more here: a few microseconds for a typical request, next to
the SDK's own parse and validation of the same bytes.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

import anyio
import mcp_types as types
import pydantic_core
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp_types.version import KNOWN_PROTOCOL_VERSIONS
from pydantic import JsonValue, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aifr.transports.mcp.framing import invalid_request, request_id_of

__all__ = ["HttpMessageGuard", "send_error"]

logger = logging.getLogger(__name__)

_VERSION_HEADER = b"mcp-protocol-version"
_SESSION_HEADER = b"mcp-session-id"
_SUPPORTED = ", ".join(KNOWN_PROTOCOL_VERSIONS)


async def send_error(
    send: Send,
    status: int,
    code: int,
    message: str,
    *,
    request_id: str | int | None = None,
    data: JsonValue = None,
) -> None:
    """Answer an HTTP request with ``status`` and one JSON-RPC error as its body.

    The ``id`` is always written, ``null`` when the request's own is unknown, as
    JSON-RPC requires of an error answer.
    """
    detail = types.ErrorData(code=code, message=message)
    if data is not None:
        detail.data = data
    error = types.JSONRPCError(jsonrpc="2.0", id=request_id, error=detail)
    await _send_body(send, status, error.model_dump_json(by_alias=True, exclude_unset=True))


async def _send_body(send: Send, status: int, text: str) -> None:
    body = text.encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", [])
    return next((v.decode("latin-1") for k, v in headers if k == name), None)


def _is_json(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json"


async def _buffer(receive: Receive, limit: int) -> tuple[bytes | None, Receive]:
    """The whole request body (``None`` if over ``limit`` or cut off), and a replaying receive.

    The replaying receive hands the application what was read here, then the rest of
    the original stream, so an oversized body still reaches the SDK's 413.
    """
    seen: deque[Message] = deque()
    chunks: list[bytes] = []
    size = 0
    complete = False
    while size <= limit:
        message = await receive()
        seen.append(message)
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            complete = size <= limit
            break

    async def replay() -> Message:
        return seen.popleft() if seen else await receive()

    return (b"".join(chunks) if complete else None), replay


class HttpMessageGuard:
    """ASGI middleware in front of the SDK's streamable HTTP app (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int = DEFAULT_MAX_REQUEST_BODY_SIZE):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._in_flight: dict[tuple[str, str], anyio.Event] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check a request's protocol version and POST body; pass everything else through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        version = _header(scope, _VERSION_HEADER)
        is_post = scope.get("method") == "POST"
        if version is not None and version not in KNOWN_PROTOCOL_VERSIONS:
            value = await self._body_value(receive) if is_post else None
            await self._refuse_version(send, version, request_id_of(value))
            return
        if not is_post:
            await self.app(scope, receive, send)
            return
        if not _is_json(_header(scope, b"content-type")):
            await send_error(
                send,
                415,
                types.INVALID_REQUEST,
                "Unsupported Media Type: a POST body is one JSON-RPC message, "
                "sent as Content-Type: application/json",
            )
            return
        body, replay = await _buffer(receive, self.max_body_bytes)
        if body is None:
            await self.app(scope, replay, send)
            return
        await self._serve(scope, body, replay, send)

    async def _body_value(self, receive: Receive) -> Any:
        body, _ = await _buffer(receive, self.max_body_bytes)
        try:
            return pydantic_core.from_json(body) if body is not None else None
        except ValueError:
            return None

    async def _serve(self, scope: Scope, body: bytes, replay: Receive, send: Send) -> None:
        try:
            value = pydantic_core.from_json(body)
        except ValueError:
            await self.app(scope, replay, send)  # the SDK's parse error names the position
            return
        if isinstance(value, list):
            await send_error(
                send,
                400,
                types.INVALID_REQUEST,
                "Invalid Request: a batch (JSON array) is not served over HTTP; "
                "POST one JSON-RPC message per request",
            )
            return
        try:
            message = types.jsonrpc_message_adapter.validate_python(value, by_name=False)
        except ValidationError:
            error = invalid_request(value)
            await _send_body(send, 400, error.model_dump_json(by_alias=True, exclude_unset=True))
            return
        session = _header(scope, _SESSION_HEADER)
        if not isinstance(message, types.JSONRPCRequest) or session is None:
            await self.app(scope, replay, send)
            return
        key = (session, str(message.id))
        while (earlier := self._in_flight.get(key)) is not None:
            logger.info("request id %r of a session waits for its namesake in flight", message.id)
            await earlier.wait()
        done = self._in_flight[key] = anyio.Event()
        try:
            await self.app(scope, replay, send)
        finally:
            del self._in_flight[key]
            done.set()

    @staticmethod
    async def _refuse_version(send: Send, version: str, request_id: str | int | None) -> None:
        logger.info("refused MCP-Protocol-Version %r", version[:64])
        await send_error(
            send,
            400,
            types.UNSUPPORTED_PROTOCOL_VERSION,
            f"Bad Request: unsupported MCP-Protocol-Version {version[:64]!r}; "
            f"this server speaks {_SUPPORTED}",
            request_id=request_id,
            data={"supported": list(KNOWN_PROTOCOL_VERSIONS), "requested": version[:64]},
        )
