"""Stdio for the MCP server, read and written by the event loop instead of worker threads.

The SDK's ``stdio_server`` reaches stdin and stdout through anyio's file wrappers,
which run every ``readline``, ``write`` and ``flush`` in a worker thread: three thread
hand-offs per request, each 50 to 70 µs of wake-up on a small VM, which is most of a
round trip. When fd 0 and fd 1 are pipes or sockets (how every MCP client launches a
server), :func:`stdio_streams` serves them through the event loop's own pipe
transports, with no thread, and frames them with :mod:`.framing`, as the Unix socket
does, so every line a client sends is answered (the SDK's reader drops a line it
cannot parse without a word).

As the SDK does, fd 0 and fd 1 point at the null device and at stderr while serving:
a capability that prints, or a child process it starts, cannot corrupt the protocol
stream or swallow its input. Anything else on fd 0 or fd 1 (a terminal a person types
at, a regular file of requests) cannot be watched by the loop and is read and written
in worker threads, as the SDK does, but framed the same way: the SDK's reader left a
malformed line there unanswered too.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any

import anyio
import anyio.to_thread

from aifr.errors import TransportError
from aifr.transports.mcp.framing import LineSink, LineSource, line_streams

__all__ = ["stdio_streams"]

_MAX_MESSAGE_BYTES = 1 << 30
"""Longest line (one JSON-RPC message) read from stdin; the SDK's own reader has none."""


def _is_pipe_or_socket(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class _Diverted:
    """fd 0 and fd 1 moved aside, and put back (blocking again) on :meth:`restore`.

    The wire goes to private copies; the null device and stderr take the numbers.
    """

    def __init__(self) -> None:
        self._saved: dict[int, int] = {}

    def take(self, fd: int, replacement: int) -> int:
        """A private duplicate of ``fd`` for the transport; ``fd`` now means ``replacement``."""
        self._saved[fd] = os.dup(fd)
        wire = os.dup(fd)
        os.dup2(replacement, fd)
        return wire

    def restore(self) -> None:
        for fd, saved in self._saved.items():
            with suppress(OSError):
                os.set_blocking(saved, True)  # the loop made the shared description non-blocking
                os.dup2(saved, fd)
            with suppress(OSError):
                os.close(saved)
        self._saved.clear()


@asynccontextmanager
async def stdio_streams() -> AsyncIterator[tuple[Any, Any]]:
    """The (read, write) message streams of an MCP session on this process's stdio."""
    on_loop = _is_pipe_or_socket(0) and _is_pipe_or_socket(1)
    diverted = _Diverted()
    async with AsyncExitStack() as stack:
        stack.callback(diverted.restore)
        null = os.open(os.devnull, os.O_RDWR)
        try:
            wire_in = diverted.take(0, null)
            wire_out = diverted.take(1, 2)
        finally:
            os.close(null)
        if on_loop:
            receive_line, send_line = await _loop_wire(stack, wire_in, wire_out)
        else:
            receive_line, send_line = await _threaded_wire(stack, wire_in, wire_out)
        async with line_streams(receive_line, send_line) as streams:
            yield streams


def _too_long() -> TransportError:
    return TransportError(
        f"message longer than {_MAX_MESSAGE_BYTES} bytes; the connection is closed"
    )


async def _loop_wire(
    stack: AsyncExitStack, wire_in: int, wire_out: int
) -> tuple[LineSource, LineSink]:
    """Pipes or sockets, read and written by the event loop's own transports."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_MAX_MESSAGE_BYTES)
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(wire_in, "rb", buffering=0)
    )
    stack.callback(read_transport.close)
    write_transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(wire_out, "wb", buffering=0)
    )
    stack.callback(write_transport.close)
    writer = asyncio.StreamWriter(write_transport, protocol, None, loop)

    async def receive_line() -> bytes:
        try:
            return await reader.readline()  # at EOF, a last line without "\n" as it is
        except ValueError as exc:  # over the limit: the rest of the line is unframed
            raise _too_long() from exc

    async def send_line(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    return receive_line, send_line


async def _threaded_wire(
    stack: AsyncExitStack, wire_in: int, wire_out: int
) -> tuple[LineSource, LineSink]:
    """A terminal or a regular file, which the loop cannot watch: read in a worker thread.

    Framed like the pipes, so a person typing at the server (or a file of requests
    redirected into it) gets an answer to every line, a malformed one included.
    """
    reader = os.fdopen(wire_in, "rb")
    stack.callback(reader.close)
    writer = os.fdopen(wire_out, "wb")
    stack.callback(writer.close)

    async def receive_line() -> bytes:
        line = await anyio.to_thread.run_sync(reader.readline, _MAX_MESSAGE_BYTES + 1)
        if len(line) > _MAX_MESSAGE_BYTES:
            raise _too_long()
        return line

    def write_line(data: bytes) -> None:
        writer.write(data)
        writer.flush()

    async def send_line(data: bytes) -> None:
        await anyio.to_thread.run_sync(write_line, data)

    return receive_line, send_line
