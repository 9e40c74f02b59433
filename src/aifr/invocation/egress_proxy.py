"""The egress proxy: the only way out for a command that was given network.

A local HTTP proxy on ``127.0.0.1`` that serves one command. ``CONNECT host:port``
(HTTPS and any TLS) and plain ``http://`` requests in absolute form are checked by the
caller's :data:`HostCheck` (for ``sys.exec``, the same guard as ``io.net``: host
allowlist, then every address the host resolves to must be public), then relayed to a
vetted address; the proxy never resolves a name itself. Every attempt is recorded, so
the call's result and audit record show which hosts were reached and which refused.
A redirect is a new request through the proxy and is checked again.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pydantic import JsonValue

from aifr.errors import AifrError

__all__ = ["Connection", "EgressProxy", "HostCheck"]

logger = logging.getLogger(__name__)

HostCheck = Callable[[str, str, int], tuple[str, ...]]
"""``(scheme, host, port) -> addresses``; raises an :class:`AifrError` to refuse."""

_HEAD_LIMIT = 64 * 1024
_CONNECT_TIMEOUT_S = 10.0
_IDLE_TIMEOUT_S = 60.0
_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class Connection:
    """One connection the command asked for, and what the proxy did with it."""

    host: str
    port: int
    method: str
    allowed: bool
    reason: str = ""

    def as_json(self) -> dict[str, JsonValue]:
        """The record as JSON for the call's result."""
        return {
            "host": self.host, "port": self.port, "method": self.method,
            "allowed": self.allowed, "reason": self.reason,
        }  # fmt: skip


@dataclass
class EgressProxy:
    """A proxy for one command; a context manager that serves until it exits.

    It listens on ``127.0.0.1`` (an ephemeral port), or on the Unix socket ``unix_path``
    when the command runs in a network namespace of its own and reaches the proxy
    through a bridge (``bubblewrap``); ``port`` is then the bridge's port inside.
    """

    check: HostCheck
    unix_path: str | None = None
    bridge_port: int = 3128
    connections: list[Connection] = field(default_factory=list)
    _server: socket.socket | None = None
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        assert self._server is not None  # noqa: S101  # only read inside the context
        if self.unix_path is not None:
            return self.bridge_port
        return int(self._server.getsockname()[1])

    def environment(self) -> dict[str, str]:
        """The variables that send HTTP clients through the proxy."""
        url = f"http://127.0.0.1:{self.port}"
        names = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")
        return {**dict.fromkeys(names, url), "NO_PROXY": "", "no_proxy": ""}

    def __enter__(self) -> EgressProxy:
        if self.unix_path is not None:
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(self.unix_path)
        else:
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.bind(("127.0.0.1", 0))
        server.listen(16)
        self._server = server
        thread = threading.Thread(target=self._accept, name="aifr-egress-proxy", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
        for thread in list(self._threads):
            thread.join(timeout=2.0)

    def _accept(self) -> None:
        assert self._server is not None  # noqa: S101  # started by __enter__
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            worker = threading.Thread(target=self._serve, args=(client,), daemon=True)
            with self._lock:
                self._threads.append(worker)
            worker.start()

    def _record(self, connection: Connection) -> None:
        with self._lock:
            self.connections.append(connection)

    def _serve(self, client: socket.socket) -> None:
        with contextlib.closing(client):
            client.settimeout(_CONNECT_TIMEOUT_S)
            head = _read_head(client)
            if head is None:
                return
            method, target, rest = head
            parsed = _target(method, target)
            if parsed is None:
                client.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                return
            scheme, host, port, forward = parsed
            try:
                addresses = self.check(scheme, host, port)
            except AifrError as exc:
                self._record(
                    Connection(host, port, method, False, str(exc.details.get("rule", exc.code)))
                )
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n")
                return
            upstream = _connect(addresses, port)
            if upstream is None:
                self._record(Connection(host, port, method, False, "unreachable"))
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n")
                return
            self._record(Connection(host, port, method, True))
            with contextlib.closing(upstream):
                if method == "CONNECT":
                    client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                else:
                    upstream.sendall(_rewrite(method, forward, rest))
                _relay(client, upstream, self._closed)


def _read_head(client: socket.socket) -> tuple[str, str, bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = client.recv(_CHUNK)
        except OSError:
            return None
        if not chunk or len(data) > _HEAD_LIMIT:
            return None
        data += chunk
    line, _, rest = data.partition(b"\r\n")
    parts = line.decode("latin-1").split(" ")
    if len(parts) != 3:
        return None
    return parts[0].upper(), parts[1], rest


def _target(method: str, target: str) -> tuple[str, str, int, str] | None:
    """``(scheme, host, port, path)`` of a request target, or ``None`` if malformed."""
    if method == "CONNECT":
        host, _, port_text = target.rpartition(":")
        host = host.strip("[]").lower().rstrip(".")
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        return "https", host, int(port_text), ""
    try:
        parts = urlsplit(target)
        port = parts.port or 80
    except ValueError:
        return None
    if parts.scheme != "http" or not parts.hostname:
        return None
    path = parts.path or "/"
    return (
        "http",
        parts.hostname.lower().rstrip("."),
        port,
        path + (f"?{parts.query}" if parts.query else ""),
    )


def _rewrite(method: str, path: str, rest: bytes) -> bytes:
    """The request in origin form, without the ``Proxy-*`` headers meant for the proxy."""
    headers, _sep, body = rest.partition(b"\r\n\r\n")
    kept = [h for h in headers.split(b"\r\n") if h and not h.lower().startswith(b"proxy-")]
    return (
        f"{method} {path} HTTP/1.1\r\n".encode("latin-1") + b"\r\n".join(kept) + b"\r\n\r\n" + body
    )


def _connect(addresses: tuple[str, ...], port: int) -> socket.socket | None:
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout=_CONNECT_TIMEOUT_S)
        except OSError:
            continue
    return None


def _relay(client: socket.socket, upstream: socket.socket, closed: threading.Event) -> None:
    peers = {client: upstream, upstream: client}
    with selectors.DefaultSelector() as sel:
        for sock in peers:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        while not closed.is_set():
            ready = sel.select(timeout=_IDLE_TIMEOUT_S)
            if not ready:
                return
            for key, _ in ready:
                source = key.fileobj
                assert isinstance(source, socket.socket)  # noqa: S101  # registered above
                try:
                    chunk = source.recv(_CHUNK)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                try:
                    peers[source].setblocking(True)
                    peers[source].sendall(chunk)
                    peers[source].setblocking(False)
                except OSError:
                    return
