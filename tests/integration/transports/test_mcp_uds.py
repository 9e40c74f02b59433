"""The Unix-socket transport with the SDK's own client and server on a real socket."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

from aifr.errors import TransportError
from aifr.transports.mcp.uds import (
    PeerCredentials,
    Streams,
    peer_credentials,
    prepare_socket_path,
    serve_unix,
    unix_client,
)


def _echo_server(peer: PeerCredentials) -> Server[Any]:
    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[types.Tool(name="whoami", input_schema={"type": "object", "properties": {}})]
        )

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(type="text", text=str(peer.uid))])

    return Server("echo", on_list_tools=list_tools, on_call_tool=call_tool)


async def _handler(streams: Streams, peer: PeerCredentials) -> None:
    server = _echo_server(peer)
    read, write = streams
    await server.run(read, write, server.create_initialization_options())


def _short_path(tmp_path: Path) -> Path:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp paths can be longer.
    if len(str(tmp_path / "mcp.sock")) < 100:
        return tmp_path / "mcp.sock"
    directory = Path(os.environ.get("XDG_RUNTIME_DIR", "/tmp")) / f"aifr-{os.getpid()}"
    directory.mkdir(exist_ok=True)
    return directory / f"{abs(hash(tmp_path))}.sock"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_sdk_client_talks_to_a_server_over_the_socket_and_sees_its_uid(
    tmp_path: Path, mode: str
) -> None:
    path = _short_path(tmp_path)
    ready = anyio.Event()

    async def main() -> tuple[list[str], str, int]:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: serve_unix(path, _handler, on_ready=lambda _p: ready.set()))
            with anyio.fail_after(10):
                await ready.wait()
                file_mode = stat.S_IMODE(path.stat().st_mode)
                async with Client(unix_client(path), mode=mode) as client:
                    tools = await client.list_tools()
                    result = await client.call_tool("whoami", {})
            group.cancel_scope.cancel()
        block = result.content[0]
        assert isinstance(block, types.TextContent)
        return [t.name for t in tools.tools], block.text, file_mode

    names, uid, file_mode = anyio.run(main)
    assert names == ["whoami"]
    assert uid == str(os.getuid())
    assert file_mode == 0o600
    assert not path.exists()


def test_socket_path_held_by_a_regular_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mcp.sock"
    path.write_text("precious")
    with pytest.raises(TransportError) as caught:
        prepare_socket_path(path)
    assert caught.value.code.value == "transport.failed"
    assert path.read_text() == "precious"


def test_socket_with_a_live_listener_is_refused(tmp_path: Path) -> None:
    path = _short_path(tmp_path)
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen(1)
    try:
        with pytest.raises(TransportError) as caught:
            prepare_socket_path(path)
        assert "in use" in caught.value.message
    finally:
        live.close()
        path.unlink()


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = _short_path(tmp_path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    assert path.exists()
    prepare_socket_path(path)
    assert not path.exists()


def test_peer_credentials_report_the_connecting_process() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        peer = peer_credentials(left)
    assert (peer.pid, peer.uid, peer.gid) == (os.getpid(), os.getuid(), os.getgid())


def test_connecting_to_a_missing_socket_is_a_transport_error(tmp_path: Path) -> None:
    async def main() -> None:
        async with unix_client(tmp_path / "absent.sock"):
            pass

    with pytest.raises(TransportError):
        anyio.run(main)


def test_a_failing_connection_does_not_stop_the_listener(tmp_path: Path) -> None:
    path = _short_path(tmp_path)
    ready = anyio.Event()
    calls: list[int] = []

    async def flaky(streams: Streams, peer: PeerCredentials) -> None:
        calls.append(peer.uid)
        if len(calls) == 1:
            raise RuntimeError("first connection breaks")
        await _handler(streams, peer)

    async def main() -> list[str]:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: serve_unix(path, flaky, on_ready=lambda _p: ready.set()))
            with anyio.fail_after(10):
                await ready.wait()
                with pytest.raises(BaseExceptionGroup) as caught:
                    async with Client(unix_client(path), mode="legacy") as client:
                        await client.list_tools()
                assert caught.group_contains(MCPError, depth=2)
                async with Client(unix_client(path), mode="legacy") as client:
                    tools = await client.list_tools()
            group.cancel_scope.cancel()
        return [t.name for t in tools.tools]

    assert anyio.run(main) == ["whoami"]


def test_connecting_to_a_path_too_long_for_a_socket_names_the_limit(tmp_path: Path) -> None:
    async def main() -> None:
        async with unix_client(tmp_path / ("s" * 200 + ".sock")):
            pass

    with pytest.raises(TransportError) as caught:
        anyio.run(main)
    # Python's OSError has no strerror here; the message ended in ": None".
    assert caught.value.message.endswith("choose a shorter one")
