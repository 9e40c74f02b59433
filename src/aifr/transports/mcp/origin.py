"""The ``Origin`` and ``Host`` checks that keep web pages away from the HTTP transport.

MCP (2025-06-18 on) says a streamable HTTP server MUST validate the ``Origin`` header
of every request, and answer 403 to one it does not accept, so that a page on another
site cannot reach a local server through the browser (DNS rebinding). The SDK checks
only when bound to ``127.0.0.1``, ``localhost`` or ``::1``, and then accepts only
``http://`` origins that name a port: ``http://localhost`` and ``https://127.0.0.1:5173``
were refused, and on any other address (``0.0.0.0``, a LAN address) nothing was checked.

One rule holds here for every bind address. A request without ``Origin`` (what
non-browser clients send) passes; an origin passes when its host is this machine's
loopback (``localhost``, 127.0.0.0/8, ``::1``), whatever its scheme and port. Any other
origin is a page elsewhere and gets 403 with a JSON-RPC error without an id. Nothing is
lost: the server answers no CORS pre-flight, so such a page could never read a response.

Bound to a loopback address, the server also requires ``Host`` to name loopback (else
421, as the SDK answers): a rebound page talks to the server under its own host name,
and a same-origin ``GET`` need not carry ``Origin`` at all.

A deployment that serves browser clients from elsewhere, or sits behind a reverse proxy
on the same machine, names them: ``[mcp] allowed_origins`` (exact origins such as
``https://console.example.com``) and ``allowed_hosts`` (``mcp.example.com``, with or
without a port). Nothing else widens the rule.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

import mcp_types as types
from starlette.types import ASGIApp, Receive, Scope, Send

from aifr.stdlib.net_guard import is_loopback
from aifr.transports.mcp.http_guard import send_error

__all__ = ["OriginGuard", "is_loopback", "normalize_origin"]

logger = logging.getLogger(__name__)


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, without a default port or trailing slash.

    Browsers send ``https://console.example.com``; a configured
    ``HTTPS://Console.example.com:443/`` names the same origin and must match it.
    """
    parts = urlsplit(origin.strip())
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: compare the text as written
        return origin.strip().lower()
    host = (parts.hostname or "").lower()
    shown = f"[{host}]" if ":" in host else host
    suffix = f":{port}" if port is not None and port != default else ""
    return f"{parts.scheme.lower()}://{shown}{suffix}"


def _host_name(host: str) -> str:
    return (urlsplit(f"//{host}").hostname or "").lower()


class OriginGuard:
    """ASGI middleware: 403 for a browser origin off this machine, 421 for a foreign host.

    The host check applies only when the server is bound to a loopback address.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        bound_to_loopback: bool,
        allowed_origins: Iterable[str] = (),
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.bound_to_loopback = bound_to_loopback
        self.allowed_origins = frozenset(normalize_origin(o) for o in allowed_origins)
        self.allowed_hosts = frozenset(_host_name(h) for h in allowed_hosts) - {""}

    def _origin_allowed(self, origin: str) -> bool:
        parts = urlsplit(origin)
        if parts.scheme in ("http", "https") and is_loopback(parts.hostname or ""):
            return True
        return normalize_origin(origin) in self.allowed_origins

    def _host_allowed(self, host: str) -> bool:
        name = _host_name(host)
        return is_loopback(name) or name in self.allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check HTTP requests before anything else sees them; pass other scopes through."""
        if scope["type"] == "http":
            refusal = self._refusal(scope.get("headers", []))
            if refusal is not None:
                status, message = refusal
                logger.warning("refused an HTTP request: %s", message)
                await send_error(send, status, types.INVALID_REQUEST, message)
                return
        await self.app(scope, receive, send)

    def _refusal(self, headers: list[tuple[bytes, bytes]]) -> tuple[int, str] | None:
        hosts = [v.decode("latin-1") for k, v in headers if k == b"host"]
        if self.bound_to_loopback and not (hosts and all(map(self._host_allowed, hosts))):
            shown = hosts[0][:200] if hosts else ""
            return 421, f"Misdirected Request: host {shown!r} is not this server"
        for name, value in headers:
            origin = value.decode("latin-1")
            if name == b"origin" and not self._origin_allowed(origin):
                return 403, (
                    f"Forbidden: origin {origin[:200]!r} may not call this server; "
                    "only pages on this machine (localhost) or in [mcp] allowed_origins may"
                )
        return None
