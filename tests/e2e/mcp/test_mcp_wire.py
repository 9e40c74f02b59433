"""Raw JSON-RPC as MCP clients nobody here wrote send it, over every transport.

The SDK's own client never sends a malformed line, a batch or a call without
``arguments``; other clients do, and each must get an answer the spec defines.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import mcp_types as types
import pytest
from mcp_harness import McpTarget, build_target, start
from mcp_wire import (
    HttpWire,
    LineWire,
    Message,
    frame,
    initialize,
    is_answer_to,
    line_wire,
    wire,
)

LINE_TRANSPORTS = pytest.mark.parametrize("target", ["stdio", "uds"], indirect=True)
PING = {"jsonrpc": "2.0", "id": 99, "method": "ping"}


def _still_serving(line: LineWire) -> None:
    answer, _ = line.request(PING)
    assert answer == {"jsonrpc": "2.0", "id": 99, "result": {}}


@LINE_TRANSPORTS
def test_a_line_that_is_not_json_gets_a_parse_error_and_the_server_keeps_serving(
    target: McpTarget,
) -> None:
    with line_wire(target) as line:
        line.handshake()
        line.send(b"this is not json\n")
        garbled = line.receive()
        line.send(b'{"jsonrpc": "2.0", "id": 2, "meth\r\n')
        torn = line.receive()
        _still_serving(line)

    for error in (garbled, torn):
        assert error["id"] is None
        assert error["error"]["code"] == types.PARSE_ERROR


@LINE_TRANSPORTS
def test_json_that_is_not_a_request_is_invalid_and_answered_with_its_id_when_it_has_one(
    target: McpTarget,
) -> None:
    with line_wire(target) as line:
        line.handshake()
        answers = []
        for text in (
            '{"jsonrpc": "2.0", "id": 7, "method": 42}',
            '{"jsonrpc": "1.0", "id": "old", "method": "ping"}',
            "42",
            '{"jsonrpc": "2.0", "id": 8}',
        ):
            line.send(text.encode() + b"\n")
            answers.append(line.receive())
        _still_serving(line)

    assert [a["error"]["code"] for a in answers] == [types.INVALID_REQUEST] * 4
    # A would-be request's id is echoed so its sender can match the error; without a
    # method it may be a malformed response, whose id is the server's own: never echoed.
    assert [a["id"] for a in answers] == [7, "old", None, None]


@LINE_TRANSPORTS
def test_a_batch_is_served_member_by_member_and_an_empty_batch_is_invalid(
    target: McpTarget,
) -> None:
    """MCP 2025-03-26 required servers to accept JSON-RPC batches (2025-06-18 removed them)."""
    batch: list[Message] = [
        {"jsonrpc": "2.0", "id": 2, "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1}},
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "shop.count", "arguments": {"text": "abc"}},
        },
        {"jsonrpc": "2.0", "id": 4, "method": 4},
    ]
    with line_wire(target) as line:
        line.handshake("2025-03-26")
        line.send(frame(batch))
        answers = {json.dumps(m["id"]): m for m in (line.receive() for _ in range(3))}
        line.send(b"[]\n")
        empty = line.receive()
        _still_serving(line)

    assert answers["2"]["result"] == {}
    assert json.loads(answers["3"]["result"]["content"][0]["text"]) == 3
    assert answers["4"]["error"]["code"] == types.INVALID_REQUEST
    assert empty["id"] is None
    assert empty["error"]["code"] == types.INVALID_REQUEST


@LINE_TRANSPORTS
def test_a_request_before_initialize_is_an_invalid_request_and_ping_is_answered(
    target: McpTarget,
) -> None:
    with line_wire(target) as line:
        early, _ = line.request({"jsonrpc": "2.0", "id": "early", "method": "tools/list"})
        pinged, _ = line.request(PING)
        line.handshake()
        listed, _ = line.request({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})

    assert early["error"]["code"] == types.INVALID_REQUEST  # the SDK said -32602, bad params
    assert "initialize" in early["error"]["message"]
    assert pinged == {"jsonrpc": "2.0", "id": 99, "result": {}}
    assert listed["result"]["tools"]


def test_params_of_the_wrong_type_are_invalid_params_naming_the_field(target: McpTarget) -> None:
    calls: list[tuple[object, object]] = [
        ("shop.greet", ["Ada"]),
        ("shop.greet", "Ada"),
        ("shop.greet", 5),
        (5, {}),
    ]
    with wire(target) as peer:
        peer.handshake()
        answers = [
            peer.request(_call(n, {"name": name, "arguments": arguments}))[0]
            for n, (name, arguments) in enumerate(calls, start=2)
        ]
        fine, _ = peer.request(_call(9, {"name": "shop.greet", "arguments": {"name": "Ada"}}))

    assert [a["error"]["code"] for a in answers] == [types.INVALID_PARAMS] * 4
    fields = ["arguments", "arguments", "arguments", "name"]
    for answer, field in zip(answers, fields, strict=True):
        assert f"params.{field}:" in answer["error"]["message"]  # the SDK named no field
    assert fine["result"]["isError"] is False


def _call(request_id: int, params: Message) -> Message:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def test_calls_and_reads_other_clients_send_get_the_answers_the_spec_defines(
    target: McpTarget,
) -> None:
    with wire(target) as peer:
        peer.handshake()
        omitted, _ = peer.request(_call(2, {"name": "shop.greet"}))
        null, _ = peer.request(_call(3, {"name": "shop.greet", "arguments": None}))
        unknown, _ = peer.request(_call(4, {"name": "no.such.tool", "arguments": {}}))
        progress = {"progressToken": 7}
        call = {"name": "workflow.welcome", "arguments": {"name": "Ada"}, "_meta": progress}
        workflow, notes = peer.request(_call(5, call))
        listed, _ = peer.request(
            {"jsonrpc": "2.0", "id": 6, "method": "tools/list", "params": {"cursor": "bogus"}}
        )
        missing, _ = peer.request(
            {
                "jsonrpc": "2.0",
                "id": 7,
                "method": "resources/read",
                "params": {"uri": "aifr://no/such"},
            }
        )
        templates, _ = peer.request(
            {"jsonrpc": "2.0", "id": 8, "method": "resources/templates/list"}
        )
        unknown_method, _ = peer.request({"jsonrpc": "2.0", "id": 9, "method": "no/such"})

    for answer in (omitted, null):  # no arguments are {}: the capability names what is missing
        assert answer["result"]["isError"] is True
        error = answer["result"]["_meta"]["aifr/error"]["error"]
        assert error["code"] == "input.invalid"
        assert error["details"]["errors"][0]["path"] == "name"
    assert unknown["result"]["isError"] is True
    assert "'no.such.tool'" in unknown["result"]["content"][0]["text"]
    assert workflow["result"]["isError"] is False
    tokens = {
        n["params"]["progressToken"] for n in notes if n["method"] == "notifications/progress"
    }
    assert tokens == {7}  # a number stays a number
    assert "shop.greet" in {tool["name"] for tool in listed["result"]["tools"]}
    assert missing["error"]["code"] == types.INVALID_PARAMS
    assert "aifr://no/such" in missing["error"]["message"]
    uri_templates = {t["uriTemplate"] for t in templates["result"]["resourceTemplates"]}
    assert uri_templates == {
        "aifr://runs/{run_id}",
        "aifr://approvals/{approval_id}",
        "aifr://findings/{project}",
    }
    assert unknown_method["error"]["code"] == types.METHOD_NOT_FOUND


@pytest.mark.parametrize("target", ["http"], indirect=True)
def test_http_refuses_pages_from_other_sites_and_serves_local_ones(target: McpTarget) -> None:
    """DNS rebinding: a foreign Origin gets 403, a foreign Host 421; localhost origins pass."""
    assert target.url is not None and target.token is not None
    url, token = target.url, target.token
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}

    def opening(**extra: str) -> httpx.Response:
        return httpx.post(url, json=initialize(), headers={**headers, **extra}, timeout=30)

    foreign = opening(Origin="http://rebound.example:8080")
    lookalike = opening(Origin="http://localhost.rebound.example")
    opaque = opening(Origin="null")
    rehosted = opening(Host="rebound.example")
    anonymous = httpx.post(url, json=initialize(), headers={"Origin": "http://a.example"})
    local = [
        opening(Origin=o) for o in ("http://localhost:6274", "http://127.0.0.1", "https://[::1]")
    ]
    without = opening()

    for refused in (foreign, lookalike, opaque, anonymous):
        assert refused.status_code == 403
        assert refused.json()["id"] is None
        assert refused.json()["error"]["code"] == types.INVALID_REQUEST
    assert rehosted.status_code == 421
    assert token not in foreign.text
    assert [r.status_code for r in (*local, without)] == [200] * 4


def test_configured_origins_and_proxy_hosts_are_served_and_nothing_else_is(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str], short_dir: Path
) -> None:
    """``[mcp] allowed_origins`` and ``allowed_hosts`` widen the rule by exactly what they name."""
    target = build_target("http", aifr_bin, tmp_path, clean_env, short_dir)
    config = target.project / "aifr.toml"  # its last table is [mcp]
    config.write_text(
        config.read_text()
        + 'allowed_origins = ["HTTPS://Console.Example.com:443/"]\n'
        + 'allowed_hosts = ["mcp.example.com"]\n'
    )
    start(target)
    try:
        assert target.url is not None and target.token is not None
        headers = {
            "Authorization": f"Bearer {target.token}",
            "Accept": "application/json, text/event-stream",
        }

        def status(**extra: str) -> int:
            answer = httpx.post(target.url, json=initialize(), headers={**headers, **extra})
            return answer.status_code

        assert status(Origin="https://console.example.com") == 200
        assert status(Origin="http://console.example.com") == 403  # another scheme
        assert status(Origin="https://console.example.com:8443") == 403  # another port
        assert status(Origin="https://evil.example.com") == 403
        assert status(Host="mcp.example.com") == 200  # behind a reverse proxy
        assert status(Host="mcp.example.com:443", Origin="https://console.example.com") == 200
        assert status(Host="rebound.example") == 421
    finally:
        for server in target.servers:
            server.stop()


HTTP_ONLY = pytest.mark.parametrize("target", ["http"], indirect=True)


async def _sse_messages(response: httpx.Response) -> AsyncIterator[Message]:
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            yield json.loads(line[5:])


@HTTP_ONLY
def test_http_a_request_whose_id_is_in_flight_waits_for_it_and_each_gets_its_own_answer(
    target: McpTarget,
) -> None:
    """The SDK keys answers by the id's text: a second ``1`` (or ``"1"``) used to hang."""
    http = HttpWire(target)
    http.handshake(capabilities={"elicitation": {}})
    http.close()
    refund = _call(1, {"name": "shop.refund", "arguments": {"order_id": 61, "amount": 1}})
    greet = {"name": "shop.greet", "arguments": {"name": "Ada"}}
    later: dict[str, Message] = {}

    async def answer_of(client: httpx.AsyncClient, message: Message) -> Message:
        response = await client.post(http.url, json=message, headers=http.headers)
        return next(m for m in HttpWire.messages(response) if is_answer_to(m, message["id"]))

    async def keep(client: httpx.AsyncClient, message: Message) -> None:
        later[json.dumps(message["id"])] = await answer_of(client, message)

    async def main() -> tuple[Message, Message, int, Message]:
        with anyio.fail_after(60):
            async with (
                httpx.AsyncClient(timeout=30) as client,
                client.stream("POST", http.url, json=refund, headers=http.headers) as first,
            ):
                events = _sse_messages(first)
                asked = await anext(events)  # the approval prompt: request 1 waits for it
                async with anyio.create_task_group() as group:
                    group.start_soon(keep, client, _call(1, greet))
                    group.start_soon(keep, client, {**_call(1, greet), "id": "1"})
                    reply = {"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "decline"}}
                    declined = await client.post(http.url, json=reply, headers=http.headers)
                    answer = await anext(m async for m in events if is_answer_to(m, 1))
                again = await answer_of(client, _call(1, greet))  # an answered id is free
        return asked, answer, declined.status_code, again

    asked, answer, declined, again = anyio.run(main)
    assert asked["method"] == "elicitation/create"
    assert declined == 202
    assert answer["result"]["_meta"]["aifr/error"]["status"] == "pending_approval"
    assert {k: m["id"] for k, m in later.items()} == {"1": 1, '"1"': "1"}
    for message in (*later.values(), again):
        assert message["result"]["structuredContent"] == {"greeting": "Hello, Ada!"}


@HTTP_ONLY
def test_http_bodies_that_are_not_one_message_are_invalid_requests_in_one_line(
    target: McpTarget,
) -> None:
    with wire(target) as peer:
        assert isinstance(peer, HttpWire)
        peer.handshake("2025-03-26")
        batch = peer.post([PING])  # type: ignore[arg-type]  # a batch on purpose
        empty = peer.post([])  # type: ignore[arg-type]  # an empty batch on purpose
        shapeless = peer.post({"hello": 1})
        old = peer.post({"jsonrpc": "1.0", "id": "old", "method": "ping"})
        texts = peer.client.post(
            peer.url,
            content=json.dumps(PING),
            headers={**peer.headers, "Content-Type": "text/plain"},
        )
        served, _ = peer.request(PING)

    for refused in (batch, empty, shapeless, old):
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == types.INVALID_REQUEST  # the SDK said -32602
        assert "\n" not in refused.json()["error"]["message"]  # not pages of pydantic text
    assert [r.json()["id"] for r in (batch, empty, shapeless, old)] == [None, None, None, "old"]
    assert texts.status_code == 415
    assert texts.json()["error"]["code"] == types.INVALID_REQUEST
    assert served == {"jsonrpc": "2.0", "id": 99, "result": {}}


@HTTP_ONLY
def test_http_an_unknown_protocol_version_header_is_refused_naming_the_supported_ones(
    target: McpTarget,
) -> None:
    with wire(target) as peer:
        assert isinstance(peer, HttpWire)
        peer.handshake()
        future = peer.post(PING, **{"MCP-Protocol-Version": "2099-01-01"})
        older = peer.post(PING, **{"MCP-Protocol-Version": "2025-03-26"})
        listening = peer.client.get(
            peer.url, headers={**peer.headers, "MCP-Protocol-Version": "garbage"}
        )

    assert future.status_code == 400
    error = future.json()["error"]
    assert future.json()["id"] == 99
    assert error["code"] == types.UNSUPPORTED_PROTOCOL_VERSION
    assert error["data"]["requested"] == "2099-01-01"
    assert "2025-06-18" in error["data"]["supported"]
    assert "2025-11-25" in error["message"]  # the SDK spoke of missing _meta envelope keys
    assert older.status_code == 200  # any version this server speaks is accepted
    assert listening.status_code == 400
    assert listening.json()["id"] is None
