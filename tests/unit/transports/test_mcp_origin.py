"""The Origin and Host checks in front of the HTTP transport, on any bind address."""

from __future__ import annotations

import anyio
import httpx
import pytest
from starlette.types import Receive, Scope, Send

from aifr.transports.mcp.origin import OriginGuard, is_loopback, normalize_origin


async def _served(scope: Scope, receive: Receive, send: Send) -> None:
    """The application behind the guard: answers 200 to whatever reaches it."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served"})


def _status(guard: OriginGuard, headers: dict[str, str]) -> int:
    async def main() -> int:
        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.5:8765") as c:
            return (await c.post("/mcp", headers=headers)).status_code

    return anyio.run(main)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost.example", False),
        ("10.0.0.5", False),
        ("192.168.1.20", False),
        ("", False),
    ],
)
def test_only_this_machines_names_and_addresses_are_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_on_an_open_bind_address_a_foreign_origin_is_refused_and_any_host_is_served() -> None:
    """On an address other than loopback the SDK checked nothing; the Origin rule holds on every address."""
    guard = OriginGuard(_served, bound_to_loopback=False)
    assert _status(guard, {"Origin": "http://10.0.0.5:8765"}) == 403
    assert _status(guard, {"Origin": "https://rebound.example"}) == 403
    assert _status(guard, {"Origin": "http://localhost:6274"}) == 200
    assert _status(guard, {}) == 200  # the Host names 10.0.0.5: not checked when bound openly


def test_bound_to_loopback_a_foreign_host_is_misdirected() -> None:
    guard = OriginGuard(_served, bound_to_loopback=True)
    assert _status(guard, {}) == 421
    assert _status(guard, {"Host": "localhost:8765"}) == 200
    assert _status(guard, {"Host": "[::1]:8765", "Origin": "http://[::1]:3000"}) == 200


@pytest.mark.parametrize(
    ("written", "normal"),
    [
        ("https://console.example.com", "https://console.example.com"),
        ("HTTPS://Console.Example.com:443/", "https://console.example.com"),
        ("http://console.example.com:80", "http://console.example.com"),
        ("http://console.example.com:8080", "http://console.example.com:8080"),
        ("https://[2001:DB8::1]:8443", "https://[2001:db8::1]:8443"),
    ],
)
def test_an_origin_is_compared_in_its_normal_form(written: str, normal: str) -> None:
    assert normalize_origin(written) == normal


def test_configured_origins_and_hosts_are_served_and_nothing_near_them_is() -> None:
    guard = OriginGuard(
        _served,
        bound_to_loopback=True,
        allowed_origins=["https://console.example.com"],
        allowed_hosts=["mcp.example.com"],
    )
    local = {"Host": "localhost:8765"}
    assert _status(guard, {**local, "Origin": "https://console.example.com"}) == 200
    assert _status(guard, {**local, "Origin": "https://console.example.com:443"}) == 200
    assert _status(guard, {**local, "Origin": "http://console.example.com"}) == 403
    assert _status(guard, {**local, "Origin": "https://console.example.com.evil"}) == 403
    assert _status(guard, {"Host": "mcp.example.com"}) == 200
    assert _status(guard, {"Host": "MCP.example.com:8443"}) == 200
    assert _status(guard, {"Host": "mcp.example.com.evil"}) == 421
