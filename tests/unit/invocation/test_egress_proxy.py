"""The egress proxy on real sockets: CONNECT tunnels, plain requests, refusals recorded."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from aifr.errors import SandboxRefusalError
from aifr.invocation.egress_proxy import EgressProxy


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that answers each line with ``echo: `` and the line."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(4096)
                conn.sendall(b"echo: " + data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
    server.close()
    thread.join(timeout=5)


def _allow_local(scheme: str, host: str, port: int) -> tuple[str, ...]:
    if host != "localhost.test":
        raise SandboxRefusalError(f"{host} refused", rule="host_not_allowed", host=host)
    return ("127.0.0.1",)


def _ask(proxy: EgressProxy, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
            if b"echo:" in answer or b"403" in answer:
                break
        return answer


def test_a_connect_to_an_allowed_host_is_tunnelled_to_the_vetted_address(echo_port: int) -> None:
    with EgressProxy(_allow_local) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as conn:
            conn.sendall(f"CONNECT localhost.test:{echo_port} HTTP/1.1\r\n\r\n".encode())
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
            conn.sendall(b"ping")
            assert conn.recv(4096) == b"echo: ping"
    assert [(c.host, c.port, c.method, c.allowed) for c in proxy.connections] == [
        ("localhost.test", echo_port, "CONNECT", True)
    ]


def test_a_host_that_is_not_allowed_gets_403_and_is_recorded(echo_port: int) -> None:
    with EgressProxy(_allow_local) as proxy:
        answer = _ask(proxy, f"CONNECT 127.0.0.1:{echo_port} HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 403")
    (seen,) = proxy.connections
    assert (seen.host, seen.allowed, seen.reason) == ("127.0.0.1", False, "host_not_allowed")


def test_a_plain_request_is_sent_in_origin_form_without_proxy_headers(echo_port: int) -> None:
    request = (
        f"GET http://localhost.test:{echo_port}/a?b=1 HTTP/1.1\r\n"
        "Host: localhost.test\r\nProxy-Authorization: Basic eA==\r\n\r\n"
    ).encode()
    with EgressProxy(_allow_local) as proxy:
        answer = _ask(proxy, request)
    assert answer.startswith(b"echo: GET /a?b=1 HTTP/1.1\r\nHost: localhost.test\r\n")
    assert b"Proxy-Authorization" not in answer


def test_a_malformed_request_is_answered_400() -> None:
    with EgressProxy(_allow_local) as proxy:
        answer = _ask(proxy, b"GET ftp://x/ HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")
    assert proxy.connections == []
