"""Newline-delimited JSON-RPC, as the stdio and Unix-socket transports carry it.

The SDK's stdio reader hands a line it cannot read to the session as an exception,
which the session only logs at debug level: a client that sent a malformed line, or
anything that is not a JSON-RPC message, waited for an answer that never came. Here
every line a client sends is answered (JSON-RPC 2.0, section 5.1):

- not JSON: a -32700 parse error with a null id, and the connection keeps serving;
- JSON but not a JSON-RPC message: a -32600 invalid request, carrying the request's id
  when it has a method and a usable id (so the client can match it), else a null id;
- a batch (an array, which MCP 2025-03-26 required servers to accept and 2025-06-18
  removed): each member is served as if it had come on its own line, and answered on
  its own line, not as one array; an empty batch is an invalid request;
- a line longer than the transport allows: a -32600 error, then the connection closes,
  since the rest of that line cannot be told apart from the next message.

Blank lines are skipped, and a CRLF line ending is whitespace to the JSON parser.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from aifr.errors import TransportError

__all__ = [
    "LineSink",
    "LineSource",
    "Streams",
    "decode_line",
    "invalid_request",
    "line_streams",
    "request_id_of",
]

logger = logging.getLogger(__name__)

Streams = tuple[
    MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]
]
LineSource = Callable[[], Awaitable[bytes]]
"""The next line from the peer, ``b""`` once it closed; :class:`TransportError` when too long."""
LineSink = Callable[[bytes], Awaitable[None]]
"""Write one framed message; ``OSError`` or anyio's closed/broken errors mean the peer left."""

_GONE = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)


def _error(code: int, message: str, request_id: Any = None) -> SessionMessage:
    return SessionMessage(
        types.JSONRPCError(
            jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=message)
        )
    )


def request_id_of(value: Any) -> str | int | None:
    """The id to answer an invalid message with: only a would-be request's own id.

    A malformed response (no ``method``) also carries an id, but that id is one of the
    server's own requests; echoing it would answer a request the client never sent.
    """
    if not isinstance(value, dict) or "method" not in value:
        return None
    request_id = value.get("id")
    if isinstance(request_id, str) or (
        isinstance(request_id, int) and not isinstance(request_id, bool)
    ):
        return request_id
    return None


def invalid_request(value: Any) -> types.JSONRPCError:
    """The -32600 answer to ``value``, decoded JSON that is not one JSON-RPC message."""
    return types.JSONRPCError(
        jsonrpc="2.0",
        id=request_id_of(value),
        error=types.ErrorData(
            code=types.INVALID_REQUEST,
            message="Invalid Request: not a JSON-RPC 2.0 request, notification or response",
        ),
    )


def _invalid(value: Any) -> SessionMessage:
    return SessionMessage(invalid_request(value))


def decode_line(line: bytes | str) -> tuple[list[SessionMessage], list[SessionMessage]]:
    """The messages one line carries, and the error responses it earns instead."""
    if not line.strip():
        return [], []
    try:
        message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
    except ValidationError:
        pass  # classified below, off the hot path
    else:
        return [SessionMessage(message)], []
    try:
        value = json.loads(line)
    except ValueError as exc:
        return [], [_error(types.PARSE_ERROR, f"Parse error: {exc}")]
    if not isinstance(value, list):
        return [], [_invalid(value)]
    if not value:
        return [], [_error(types.INVALID_REQUEST, "Invalid Request: an empty batch")]
    messages: list[SessionMessage] = []
    errors: list[SessionMessage] = []
    for member in value:
        try:
            messages.append(
                SessionMessage(types.jsonrpc_message_adapter.validate_python(member, by_name=False))
            )
        except ValidationError:
            errors.append(_invalid(member))
    return messages, errors


@asynccontextmanager
async def line_streams(receive_line: LineSource, send_line: LineSink) -> AsyncIterator[Streams]:
    """SDK session streams over a line-framed peer, answering every unreadable line."""
    incoming_send, incoming = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    outgoing, outgoing_receive = anyio.create_memory_object_stream[SessionMessage](0)
    answers = outgoing.clone()  # the reader's own errors go out in order with the session's

    async def read_lines() -> None:
        async with incoming_send, answers:
            try:
                while line := await receive_line():
                    messages, errors = decode_line(line)
                    for error in errors:
                        await answers.send(error)
                    for message in messages:
                        await incoming_send.send(message)
            except TransportError as exc:
                await answers.send(_error(types.INVALID_REQUEST, exc.message))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                logger.debug("the session or the peer ended before every line was read")

    async def write_lines() -> None:
        async with outgoing_receive:
            async for item in outgoing_receive:
                data = item.message.model_dump_json(by_alias=True, exclude_unset=True)
                try:
                    await send_line(data.encode("utf-8") + b"\n")
                except _GONE:
                    logger.debug("the peer left before a message could be written")
                    return

    async with anyio.create_task_group() as group:
        group.start_soon(read_lines)
        group.start_soon(write_lines)
        try:
            yield incoming, outgoing
        finally:
            await outgoing.aclose()
            await incoming.aclose()
            group.cancel_scope.cancel()
