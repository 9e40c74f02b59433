"""Raw JSON-RPC to a running ``aifr mcp``, as a client nobody here wrote would send it.

No SDK on the client side: a :class:`LineWire` writes bytes to stdio or a Unix socket
and reads one JSON message per line back; an :class:`HttpWire` posts to streamable HTTP
and reads the JSON or SSE answer. Every read is bounded.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from mcp_harness import McpTarget

Message = dict[str, Any]
ANSWER_TIMEOUT_S = 30.0


def frame(message: Message | list[Message]) -> bytes:
    return (json.dumps(message) + "\n").encode()


def initialize(
    version: str = "2025-06-18", client: str = "raw-wire", capabilities: Message | None = None
) -> Message:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": capabilities or {},
            "clientInfo": {"name": client, "version": "1"},
        },
    }


INITIALIZED: Message = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def is_answer_to(message: Message, request_id: object) -> bool:
    return message.get("id") == request_id and ("result" in message or "error" in message)


class LineWire:
    """Newline-delimited JSON-RPC over a pipe pair or a socket."""

    def __init__(self, read_fd: int, write: Callable[[bytes], None]) -> None:
        self._fd = read_fd
        self._write = write
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self._write(data)

    def receive(self, timeout: float = ANSWER_TIMEOUT_S) -> Message:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self._fd], [], [], max(deadline - time.monotonic(), 0))
            assert ready, f"no message within {timeout} s"
            chunk = os.read(self._fd, 1 << 16)
            assert chunk, "the server closed the connection"
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: Message = json.loads(line)
        return message

    def handshake(self, version: str = "2025-06-18") -> Message:
        self.send(frame(initialize(version)) + frame(INITIALIZED))
        return self.receive()

    def request(self, message: Message) -> tuple[Message, list[Message]]:
        """Send one request; its answer, and what the server sent before it."""
        self.send(frame(message))
        before: list[Message] = []
        while not is_answer_to(answer := self.receive(), message["id"]):
            before.append(answer)
        return answer, before


@contextmanager
def line_wire(target: McpTarget) -> Iterator[LineWire]:
    """A raw connection: a fresh stdio server, or one client of the running socket server."""
    if target.transport == "stdio":
        server = subprocess.Popen(
            [target.aifr_bin, "mcp", "--transport", "stdio", "-p", str(target.project)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=target.env,
        )
        assert server.stdin is not None and server.stdout is not None
        stdin = server.stdin

        def write(data: bytes) -> None:
            stdin.write(data)
            stdin.flush()

        try:
            yield LineWire(server.stdout.fileno(), write)
        finally:
            stdin.close()
            code = server.wait(timeout=30)
            server.stdout.close()
        assert code == 0, f"the stdio server exited with {code}"
        return
    assert target.transport == "uds" and target.socket is not None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(target.socket))
        yield LineWire(sock.fileno(), sock.sendall)


class HttpWire:
    """Streamable HTTP, one POST per message, answers read from JSON or SSE bodies."""

    def __init__(self, target: McpTarget) -> None:
        assert target.url is not None and target.token is not None
        self.url = target.url
        self.headers = {
            "Authorization": f"Bearer {target.token}",
            "Accept": "application/json, text/event-stream",
        }
        self.client = httpx.Client(timeout=ANSWER_TIMEOUT_S)

    def post(self, message: Message, **headers: str) -> httpx.Response:
        return self.client.post(self.url, json=message, headers={**self.headers, **headers})

    def handshake(
        self, version: str = "2025-06-18", capabilities: Message | None = None
    ) -> Message:
        opened = self.post(initialize(version, capabilities=capabilities))
        assert opened.status_code == 200, opened.text
        self.headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
        self.headers["MCP-Protocol-Version"] = version
        assert self.post(INITIALIZED).status_code == 202
        return self.messages(opened)[0]

    @staticmethod
    def events(response: httpx.Response) -> Iterator[Message]:
        """The messages of a streamed SSE answer, as they arrive."""
        for line in response.iter_lines():
            if line.startswith("data:"):
                yield json.loads(line[5:])

    @staticmethod
    def messages(response: httpx.Response) -> list[Message]:
        if response.headers["content-type"].startswith("application/json"):
            return [response.json()]
        lines = response.text.splitlines()
        return [json.loads(line[5:]) for line in lines if line.startswith("data:")]

    def request(self, message: Message) -> tuple[Message, list[Message]]:
        """Send one request; its answer, and what the server sent before it."""
        response = self.post(message)
        received = self.messages(response)
        answers = [m for m in received if is_answer_to(m, message["id"])]
        assert len(answers) == 1, (response.status_code, response.text)
        return answers[0], received[: received.index(answers[0])]

    def close(self) -> None:
        self.client.close()


@contextmanager
def wire(target: McpTarget) -> Iterator[LineWire | HttpWire]:
    """A raw, initialized-by-the-caller connection over the target's transport."""
    if target.transport == "http":
        http = HttpWire(target)
        try:
            yield http
        finally:
            http.close()
        return
    with line_wire(target) as line:
        yield line
