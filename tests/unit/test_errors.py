"""The error tree: stable codes, one payload shape, status and exit tables."""

from __future__ import annotations

import json

import pytest

from aifr import errors
from aifr.errors import (
    AifrError,
    ErrorCode,
    FieldError,
    InputValidationError,
    SandboxRefusalError,
    error_payload,
    exit_code_for,
    http_status_for,
)


def test_every_error_class_derives_from_aifr_error_and_has_a_code() -> None:
    classes = [
        getattr(errors, n) for n in errors.__all__ if n.endswith("Error") and n != "FieldError"
    ]
    assert classes
    for cls in classes:
        assert issubclass(cls, AifrError)
        assert isinstance(cls.code, ErrorCode)
        assert cls.__doc__


def test_codes_are_unique_and_dotted() -> None:
    values = [c.value for c in ErrorCode]
    assert len(values) == len(set(values))
    assert all(v == "internal" or "." in v for v in values)


def test_payload_shape_is_pinned() -> None:
    error = InputValidationError(
        "bad",
        errors=[
            FieldError(path="a", code="min", message="too small", expected={"ge": 1}, received=0)
        ],
        capability_id="x",
    )
    payload = error_payload(error)
    assert set(payload) == {"ok", "error"}
    assert payload["ok"] is False
    body = payload["error"]
    assert isinstance(body, dict)
    assert set(body) == {"code", "type", "message", "details"}
    assert body["code"] == "input.invalid"
    json.dumps(payload)


def test_refusals_name_their_rule() -> None:
    refusal = SandboxRefusalError("outside", rule="path_outside_root", path="../x")
    assert refusal.rule == "path_outside_root"
    assert refusal.details["rule"] == "path_outside_root"
    assert "path_outside_root" not in repr(refusal) or "execution.refused" in repr(refusal)


@pytest.mark.parametrize(
    ("code", "status", "exit_code"),
    [
        (ErrorCode.POLICY_DENIED, 403, 3),
        (ErrorCode.CAPABILITY_NOT_FOUND, 404, 5),
        (ErrorCode.INPUT_INVALID, 422, 2),
        (ErrorCode.EXECUTION_TIMEOUT, 504, 6),
        (ErrorCode.APPROVAL_REQUIRED, 202, 4),
        (ErrorCode.APPROVAL_EXPIRED, 409, 1),
        (ErrorCode.APPROVAL_ALREADY_DECIDED, 409, 1),
        (ErrorCode.APPROVAL_REJECTED, 409, 1),
        (ErrorCode.INTERNAL, 500, 1),
    ],
)
def test_one_table_maps_codes_to_http_status_and_exit_code(
    code: ErrorCode, status: int, exit_code: int
) -> None:
    assert http_status_for(code) == status
    assert exit_code_for(code) == exit_code
