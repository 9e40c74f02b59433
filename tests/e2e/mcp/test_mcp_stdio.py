"""``aifr mcp --transport stdio`` as a client launches it: pipes, noisy handlers, big messages."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_harness import run_aifr
from mcp_wire import INITIALIZED, Message, frame, initialize

NOISY = '''
import subprocess
import sys

from aifr import capability


@capability("noisy.echo", operation="READ", risk="LOW")
def echo(text: str) -> dict[str, object]:
    """Echo, while printing to stdout, starting a child that prints, and reading stdin."""
    print("stray print from a handler")
    sys.stdout.flush()
    subprocess.run(["echo", "stray output of a child"], check=True)
    return {"text": text, "length": len(text), "stdin": sys.stdin.read()}


@capability("noisy.stuck", operation="READ", risk="LOW", timeout_s=1)
def stuck() -> None:
    """Hangs, as a network read with no timeout does."""
    import time

    time.sleep(600)
'''

POLICY = """\
version: 1
rules:
  - id: allow-noisy
    when: {capability: "noisy.*"}
    decision: ALLOW
"""


def _project(aifr_bin: str, root: Path, env: dict[str, str]) -> Path:
    project = root / "noisy"
    assert run_aifr(aifr_bin, "init", str(project), cwd=root, env=env).returncode == 0
    (project / "noisy_caps.py").write_text(NOISY)
    (project / "policies" / "default.yaml").write_text(POLICY)
    config = project / "aifr.toml"
    config.write_text(
        config.read_text().replace("capability_modules = []", 'capability_modules = ["noisy_caps"]')
    )
    return project


def test_handlers_that_print_start_children_or_read_stdin_cannot_touch_the_protocol_stream(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    env = clean_env
    project = _project(aifr_bin, tmp_path, env)
    errors = tmp_path / "stderr.log"
    params = StdioServerParameters(
        command=aifr_bin, args=["mcp", "--transport", "stdio", "-p", str(project)], env=env
    )

    async def session() -> list[dict[str, object]]:
        with errors.open("w") as sink:
            async with Client(stdio_client(params, errlog=sink)) as client:
                return [
                    (await client.call_tool("noisy.echo", {"text": f"call {n}"})).structured_content
                    or {}
                    for n in range(5)
                ]

    outputs = anyio.run(session)

    assert outputs == [{"text": f"call {n}", "length": 6, "stdin": ""} for n in range(5)]
    log = errors.read_text()
    assert log.count("stray print from a handler") == 5
    assert log.count("stray output of a child") == 5


def _opening(version: str, client: str) -> list[Message]:
    """The handshake a client sends first: ``initialize`` (id 1), then ``initialized``."""
    return [initialize(version, client), INITIALIZED]


def _stdio_server(aifr_bin: str, project: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``aifr mcp --transport stdio`` on pipes, as a client launches it (stderr dropped)."""
    return subprocess.Popen(
        [aifr_bin, "mcp", "--transport", "stdio", "-p", str(project)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def _exchange(
    aifr_bin: str, project: Path, env: dict[str, str], messages: list[Message]
) -> dict[object, dict[str, object]]:
    """Send ``messages`` to a fresh stdio server and read every response, then close stdin.

    Closing stdin is how a client shuts a stdio server down (calls still running are
    then cancelled, as by the SDK), so it waits for the answers first.
    """
    expected = {m["id"] for m in messages if "id" in m}
    server = _stdio_server(aifr_bin, project, env)
    assert server.stdin is not None and server.stdout is not None
    responses: dict[object, dict[str, object]] = {}
    try:
        server.stdin.write(b"".join(frame(m) for m in messages))
        server.stdin.flush()
        while set(responses) != expected:
            line = server.stdout.readline()
            assert line, f"the server closed stdout before answering {expected - set(responses)}"
            message = json.loads(line)
            if "id" in message:
                responses[message["id"]] = message
    finally:
        server.stdin.close()
        assert server.wait(timeout=30) == 0
        server.stdout.close()
    return responses


def test_a_message_far_larger_than_a_pipe_buffer_goes_both_ways(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    """A 3 MB argument in one line, and the same back: no line limit, no torn frames."""
    project = _project(aifr_bin, tmp_path, clean_env)
    big = "x" * 3_000_000
    responses = _exchange(
        aifr_bin,
        project,
        clean_env,
        [
            *_opening("2025-06-18", "raw-pipe-test"),
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "noisy.echo", "arguments": {"text": big}},
            },
        ],
    )

    result = responses[2]["result"]
    assert result["isError"] is False  # type: ignore[index]
    assert result["structuredContent"]["length"] == 3_000_000  # type: ignore[index]
    assert result["structuredContent"]["text"] == big  # type: ignore[index]


@pytest.mark.parametrize(
    ("version", "structured", "annotated"),
    [
        ("2024-11-05", False, False),
        ("2025-03-26", False, True),
        ("2025-06-18", True, True),
        ("2025-11-25", True, True),
    ],
)
def test_a_client_gets_only_the_fields_its_protocol_version_defines(
    aifr_bin: str,
    tmp_path: Path,
    clean_env: dict[str, str],
    version: str,
    structured: bool,
    annotated: bool,
) -> None:
    """Output schemas and structured results only from 2025-06-18; the output is text too."""
    project = _project(aifr_bin, tmp_path, clean_env)
    responses = _exchange(
        aifr_bin,
        project,
        clean_env,
        [
            *_opening(version, "old-client"),
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "tools/call",
                "params": {"name": "noisy.echo", "arguments": {"text": "hi"}},
            },
        ],
    )

    assert responses[1]["result"]["protocolVersion"] == version  # type: ignore[index]
    tools = {t["name"]: t for t in responses[2]["result"]["tools"]}  # type: ignore[index]
    echo = tools["noisy.echo"]
    assert echo["inputSchema"]["required"] == ["text"]
    assert ("outputSchema" in echo) is structured
    assert ("title" in echo) is structured
    assert ("_meta" in echo) is structured
    assert ("annotations" in echo) is annotated
    assert "risk LOW" in echo["description"]
    result = responses[3]["result"]
    assert result["isError"] is False  # type: ignore[index]
    output = {"text": "hi", "length": 2, "stdin": ""}
    assert json.loads(result["content"][0]["text"]) == output  # type: ignore[index]
    assert result.get("structuredContent") == (output if structured else None)  # type: ignore[union-attr]


def test_requests_from_a_regular_file_are_all_answered_a_malformed_line_included(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    """``aifr mcp < requests.jsonl > answers.jsonl``: no pipe, so the loop cannot watch it."""
    project = _project(aifr_bin, tmp_path, clean_env)
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(
        b"".join(frame(m) for m in _opening("2025-06-18", "a-file")) + b"not json\n"
    )
    answers = tmp_path / "answers.jsonl"
    with requests.open("rb") as stdin, answers.open("wb") as stdout:
        code = subprocess.run(
            [aifr_bin, "mcp", "--transport", "stdio", "-p", str(project)],
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.DEVNULL,
            env=clean_env,
            timeout=60,
        ).returncode

    assert code == 0
    opened, garbled = (json.loads(line) for line in answers.read_text().splitlines())
    assert opened["result"]["serverInfo"]["name"] == "aifr"
    assert garbled["id"] is None
    assert garbled["error"]["code"] == -32700  # the SDK's reader left the line unanswered


def test_the_server_exits_when_its_client_leaves_during_a_call_that_hangs(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    """Closing stdin ends the session; the hung handler must not keep the process alive.

    The loop that would have ended the call at its deadline is gone with the session, so
    the runtime waits for the call only until its handler's deadline (1 s here).
    """
    project = _project(aifr_bin, tmp_path, clean_env)
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "noisy.stuck", "arguments": {}}}  # fmt: skip
    server = _stdio_server(aifr_bin, project, clean_env)
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write(b"".join(frame(m) for m in [*_opening("2025-06-18", "leaver"), call]))
    server.stdin.flush()
    assert json.loads(server.stdout.readline())["id"] == 1  # initialized; the call is running
    time.sleep(0.3)
    left = time.monotonic()
    server.stdin.close()
    try:
        code = server.wait(timeout=30)
    finally:
        server.kill()
        server.stdout.close()

    assert code == 0
    assert time.monotonic() - left < 20
