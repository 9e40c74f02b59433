"""MCP over a Unix domain socket: newline-delimited JSON-RPC, as on stdio.

The socket file is created with mode 0600 (the umask is tightened around ``bind``, so
there is no moment when it is wider). Each connection's peer uid is read with
``SO_PEERCRED`` and handed to the connection handler, which maps it to a principal.

Start-up refuses a path that exists and is not a socket, or a socket some process
still accepts connections on; a stale socket (nobody listening) is replaced.
:func:`unix_client` is the client half, usable as a transport of the SDK's ``Client``.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import stat
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from aifr.errors import TransportError
from aifr.transports.mcp.framing import Streams, line_streams

__all__ = [
    "DEFAULT_SOCKET_MODE",
    "MAX_MESSAGE_BYTES",
    "PeerCredentials",
    "Streams",
    "peer_credentials",
    "prepare_socket_path",
    "serve_unix",
    "unix_client",
]

logger = logging.getLogger(__name__)

DEFAULT_SOCKET_MODE = 0o600
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_UCRED = struct.Struct("3i")
_MAX_PATH_BYTES = 107 if sys.platform.startswith("linux") else 103
"""Longest socket path ``bind``/``connect`` take: ``sun_path`` less its NUL (104 on BSDs)."""

ConnectionHandler = Callable[[Streams, "PeerCredentials"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    """The process at the other end of a Unix socket connection."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """Read the connecting process's pid, uid and gid with ``SO_PEERCRED``.

    Raises:
        TransportError: the platform or socket cannot report peer credentials.
    """
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except (AttributeError, OSError) as exc:
        raise TransportError(f"cannot read the peer's credentials (SO_PEERCRED): {exc}") from exc
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


def prepare_socket_path(path: Path) -> None:
    """Make ``path`` free for a new socket, removing only a stale socket.

    Raises:
        TransportError: the path is not a socket, or a live server listens on it.
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise TransportError(
            f"{path} exists and is not a socket; refusing to replace it", path=str(path)
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise TransportError(f"{path}: cannot probe the existing socket: {exc}") from exc
        logger.info("removing stale socket %s", path)
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise TransportError(
        f"{path} is in use by a running server; stop it or choose another --socket",
        path=str(path),
    )


def _os_reason(path: Path | str, exc: OSError) -> str:
    """Why a socket call on ``path`` failed, for a message.

    Python refuses a path too long for ``sun_path`` with an ``OSError`` whose
    ``strerror`` is ``None``; the message then said "cannot listen on PATH: None".
    """
    if exc.strerror:
        return exc.strerror
    size = len(os.fsencode(path))
    if size > _MAX_PATH_BYTES:
        return (
            f"the path is {size} bytes, and a Unix socket path may have at most "
            f"{_MAX_PATH_BYTES}; choose a shorter one"
        )
    return str(exc)


def _bind(path: Path, mode: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
        os.chmod(path, mode)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise TransportError(
            f"cannot listen on {path}: {_os_reason(path, exc)}", path=str(path)
        ) from exc
    finally:
        os.umask(previous)
    return sock


@asynccontextmanager
async def _framed(stream: anyio.abc.ByteStream) -> AsyncIterator[Streams]:
    """Newline-delimited JSON-RPC over a byte stream, as SDK session streams."""
    buffered = BufferedByteReceiveStream(stream)

    async def receive_line() -> bytes:
        try:
            return await buffered.receive_until(b"\n", MAX_MESSAGE_BYTES)
        except anyio.DelimiterNotFound as exc:
            raise TransportError(
                f"message longer than {MAX_MESSAGE_BYTES} bytes; the connection is closed"
            ) from exc
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
            return b""  # the peer left (mid-line, an unfinished message is dropped)

    async with line_streams(receive_line, stream.send) as streams:
        yield streams


async def serve_unix(
    path: Path,
    handler: ConnectionHandler,
    *,
    mode: int = DEFAULT_SOCKET_MODE,
    on_ready: Callable[[Path], None] | None = None,
    stop_on_signals: bool = False,
) -> None:
    """Accept connections on ``path`` until cancelled; the socket file is removed after.

    With ``stop_on_signals`` (the CLI), SIGTERM and SIGINT stop the server the same way,
    so a stopped server leaves no socket file behind.

    Raises:
        TransportError: the path is taken (see :func:`prepare_socket_path`) or
            cannot be bound.
    """
    prepare_socket_path(path)
    listener = await anyio.abc.SocketListener.from_socket(_bind(path, mode))

    async def serve_one(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)  # noqa: S610  # anyio typed attribute, not Django
            try:
                peer = peer_credentials(raw)
            except TransportError:
                logger.exception("refusing a connection without peer credentials")
                return
            try:
                async with _framed(stream) as streams:
                    await handler(streams, peer)
            except Exception:  # top-level per connection: one client's failure stays its own
                logger.exception("uds connection from pid %s failed", peer.pid)

    try:
        async with listener, anyio.create_task_group() as group:
            if stop_on_signals:
                # The handlers must be in place before "ready" is announced: a supervisor
                # that sends SIGTERM right after the announcement must get a clean stop.
                await group.start(_cancel_on_signals, group.cancel_scope)
            if on_ready is not None:
                on_ready(path)
            await listener.serve(serve_one)
    finally:
        path.unlink(missing_ok=True)


async def _cancel_on_signals(
    scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for received in signals:
            logger.info("unix socket server stopping on signal %s", received)
            scope.cancel()


@asynccontextmanager
async def unix_client(path: Path | str) -> AsyncIterator[Streams]:
    """Connect to an aifr MCP Unix socket; yields SDK-compatible read/write streams.

    Raises:
        TransportError: nothing listens on ``path``.
    """
    try:
        stream = await anyio.connect_unix(str(path))
    except OSError as exc:
        raise TransportError(
            f"cannot connect to {path}: {_os_reason(path, exc)}", path=str(path)
        ) from exc
    async with stream, _framed(stream) as streams:
        yield streams
