"""Run an :class:`AifrMcpServer` on stdio, streamable HTTP or a Unix socket.

Each runner takes the identity rule of its transport: stdio serves one configured
identity; the Unix socket maps each peer's uid (``SO_PEERCRED``) to a principal, by
uid number or user name, falling back to the configured one; HTTP requires a bearer
token from the token file on every request and answers 401 without one, after
:class:`~aifr.transports.mcp.origin.OriginGuard` has refused pages from other sites.
"""

from __future__ import annotations

import logging
import pwd
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp.server.transport_security import (
    DEFAULT_MAX_REQUEST_BODY_SIZE,
    TransportSecuritySettings,
)

from aifr.errors import TransportError
from aifr.invocation import TokenService
from aifr.transports.mcp.auth import BearerAuthMiddleware, McpIdentity
from aifr.transports.mcp.http_guard import HttpMessageGuard
from aifr.transports.mcp.origin import OriginGuard, is_loopback
from aifr.transports.mcp.server import AifrMcpServer
from aifr.transports.mcp.stdio import stdio_streams
from aifr.transports.mcp.uds import DEFAULT_SOCKET_MODE, PeerCredentials, Streams, serve_unix

__all__ = ["UidPrincipals", "serve_http", "serve_stdio", "serve_uds"]

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"
METRICS_PATH = "/metrics"
MAX_BODY_BYTES = DEFAULT_MAX_REQUEST_BODY_SIZE
"""Largest POST body served; the guard and the SDK must agree, or a 413 would be skipped."""


async def serve_stdio(server: AifrMcpServer) -> None:
    """Serve one client on this process's stdin/stdout until it disconnects."""
    async with stdio_streams() as (read, write):
        await server.server.run(read, write, server.server.create_initialization_options())


@dataclass(frozen=True, slots=True)
class UidPrincipals:
    """Maps a Unix-socket peer's uid to an identity; unknown uids get ``fallback``.

    Keys of ``mapping`` are uid numbers or user names (``{"1000": "alice"}`` or
    ``{"alice": "alice@corp"}``).
    """

    fallback: McpIdentity
    mapping: Mapping[str, str] = field(default_factory=dict)

    def identity_for(self, uid: int) -> McpIdentity:
        """The identity a connection from ``uid`` acts as."""
        principal = self.mapping.get(str(uid))
        if principal is None:
            try:
                principal = self.mapping.get(pwd.getpwuid(uid).pw_name)
            except KeyError:
                principal = None
        if principal is None:
            return self.fallback
        return McpIdentity(principal, self.fallback.roles, self.fallback.operator)


async def serve_uds(
    server: AifrMcpServer,
    path: Path,
    identities: UidPrincipals,
    *,
    mode: int = DEFAULT_SOCKET_MODE,
    on_ready: Callable[[Path], None] | None = None,
) -> None:
    """Serve every client that connects to the socket at ``path`` until cancelled.

    Raises:
        TransportError: the path is taken by a file or a live server.
    """

    async def handle(streams: Streams, peer: PeerCredentials) -> None:
        identity = identities.identity_for(peer.uid)
        logger.info("uds connection pid=%s uid=%s as %s", peer.pid, peer.uid, identity.principal)
        read, write = streams
        await server.serve_connection(read, write, identity)

    await serve_unix(path, handle, mode=mode, on_ready=on_ready, stop_on_signals=True)


# uvicorn closes an idle keep-alive connection after 5 s, about when HTTP clients
# (undici: 4 s) reuse theirs: a client that sends its next call while the server closes
# the socket sees "fetch failed". Outlasting the clients' own idle timeout, as nginx's
# 75 s does, lets the client be the side that closes.
KEEP_ALIVE_S = 75


def _listening_socket(host: str, port: int) -> socket.socket:
    if not 0 <= port <= 65535:
        raise TransportError(
            f"cannot listen on {host}:{port}: a port is 0 (any free one) to 65535",
            host=host,
            port=port,
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise TransportError(
            f"cannot listen on {host}:{port}: {exc.strerror}", host=host, port=port
        ) from exc
    sock.set_inheritable(True)
    return sock


async def serve_http(
    server: AifrMcpServer,
    tokens: TokenService,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    on_ready: Callable[[str], None] | None = None,
    allowed_origins: Iterable[str] = (),
    allowed_hosts: Iterable[str] = (),
    metrics: Any = None,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Serve streamable HTTP at ``http://host:port/mcp`` until cancelled.

    ``metrics``, an ASGI app (prometheus-client's), is served at ``/metrics`` behind
    the same bearer tokens as the MCP endpoint: its labels name the capabilities.
    With ``ssl_context`` (TLS 1.3 only, from ``aifr.api.tls.server_context``) it serves
    ``https://`` instead.

    ``port=0`` picks a free port; ``on_ready`` receives the URL once it listens.
    ``allowed_origins`` and ``allowed_hosts`` widen :class:`OriginGuard`'s
    this-machine-only rule for browser clients elsewhere and for a reverse proxy.

    Raises:
        TransportError: the address cannot be bound.
    """
    import uvicorn  # only the HTTP transport needs it

    # The SDK's own Host/Origin check is off: OriginGuard does it for every bind address.
    sdk_app = server.server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        max_request_body_size=MAX_BODY_BYTES,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    inner: Any = HttpMessageGuard(sdk_app, max_body_bytes=MAX_BODY_BYTES)
    if metrics is not None:
        inner = _MetricsRoute(metrics, inner)
    app: Any = OriginGuard(
        BearerAuthMiddleware(inner, tokens),
        bound_to_loopback=is_loopback(host),
        allowed_origins=allowed_origins,
        allowed_hosts=allowed_hosts,
    )
    sock = _listening_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    config.load()
    config.ssl = ssl_context  # after load(): the caller's TLS 1.3-only context, or none
    runner = uvicorn.Server(config)
    try:
        finished = anyio.Event()

        async def serve() -> None:
            try:
                await runner.serve(sockets=[sock])
            finally:
                finished.set()

        async with anyio.create_task_group() as group:
            group.start_soon(serve)
            # Announce only once uvicorn has started, so its signal handlers are in place:
            # a supervisor that sends SIGTERM right after the announcement gets a clean stop.
            while not (runner.started or finished.is_set()):
                await anyio.sleep(0.005)
            if runner.started and on_ready is not None:
                scheme = "https" if ssl_context is not None else "http"
                on_ready(f"{scheme}://{shown}:{bound_port}{MCP_PATH}")
    finally:
        sock.close()


class _MetricsRoute:
    """ASGI: ``GET /metrics`` goes to the metrics app, everything else to the MCP app."""

    def __init__(self, metrics: Any, app: Any) -> None:
        self.metrics = metrics
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Route by path."""
        if scope["type"] == "http" and scope.get("path") == METRICS_PATH:
            await self.metrics(scope, receive, send)
        else:
            await self.app(scope, receive, send)
