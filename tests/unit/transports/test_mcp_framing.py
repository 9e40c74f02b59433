"""Decoding one line of newline-delimited JSON-RPC: every unreadable line earns an error."""

from __future__ import annotations

import mcp_types as types
import pytest
from mcp.shared.message import SessionMessage

from aifr.transports.mcp.framing import decode_line


def _codes_and_ids(errors: list[SessionMessage]) -> list[tuple[int, object]]:
    answers = [e.message for e in errors]
    assert all(isinstance(a, types.JSONRPCError) for a in answers)
    return [(a.error.code, a.id) for a in answers if isinstance(a, types.JSONRPCError)]


def _refused(line: bytes) -> list[tuple[int, object]]:
    messages, errors = decode_line(line)
    assert messages == []
    return _codes_and_ids(errors)


def test_a_request_with_a_crlf_ending_is_one_message_and_no_error() -> None:
    messages, errors = decode_line(b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}\r\n')
    assert errors == []
    assert [m.message for m in messages] == [
        types.JSONRPCRequest(jsonrpc="2.0", id=1, method="ping")
    ]


@pytest.mark.parametrize("line", [b"\n", b"  \r\n", b""])
def test_a_blank_line_is_skipped_without_an_answer(line: bytes) -> None:
    assert decode_line(line) == ([], [])


@pytest.mark.parametrize("line", [b"not json\n", b'{"jsonrpc": "2.0", "id": 1\n', b"\xff\xfe\n"])
def test_a_line_that_is_not_json_is_a_parse_error_with_a_null_id(line: bytes) -> None:
    assert _refused(line) == [(types.PARSE_ERROR, None)]


@pytest.mark.parametrize(
    ("line", "request_id"),
    [
        (b'{"jsonrpc": "2.0", "id": 5, "method": 5}', 5),
        (b'{"jsonrpc": "1.0", "id": "a", "method": "ping"}', "a"),
        (b'{"jsonrpc": "2.0", "id": true, "method": 5}', None),  # not a JSON-RPC id
        (b'{"jsonrpc": "2.0", "id": 1.5, "method": 5}', None),
        (b'{"jsonrpc": "2.0", "id": 5}', None),  # no method: maybe a response, the id is ours
        (b'"ping"', None),
    ],
)
def test_json_that_is_no_message_is_an_invalid_request_naming_a_requests_own_id(
    line: bytes, request_id: object
) -> None:
    assert _refused(line) == [(types.INVALID_REQUEST, request_id)]


def test_a_batch_yields_its_valid_members_and_an_error_for_each_invalid_one() -> None:
    messages, errors = decode_line(
        b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"},'
        b' {"jsonrpc": "2.0", "method": "notifications/initialized"},'
        b' {"jsonrpc": "2.0", "id": 2, "method": null}, 3]'
    )
    assert [type(m.message) for m in messages] == [types.JSONRPCRequest, types.JSONRPCNotification]
    assert _codes_and_ids(errors) == [(types.INVALID_REQUEST, 2), (types.INVALID_REQUEST, None)]


def test_an_empty_batch_is_one_invalid_request() -> None:
    assert _refused(b"[]\n") == [(types.INVALID_REQUEST, None)]
