"""RFC 9457 problem details: every error the API answers, built from the one ``error_payload``.

A problem body carries ``type`` (``urn:aifr:error:<code>``), ``title`` (the error class),
``status``, ``detail`` (the message) and aifr's own ``code`` and ``details``, the same
code the CLI prints and MCP sends, so a client keys on one value whatever the surface.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, JsonValue
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Send

from aifr.errors import (
    AifrError,
    ErrorCode,
    FieldError,
    InputValidationError,
    TransportError,
    error_payload,
    http_status_for,
)

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "Problem",
    "error_response",
    "install_problem_handlers",
    "problem_body",
    "problem_response",
    "send_problem",
    "unexpected_response",
]

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(BaseModel):
    """The body of every error answer (RFC 9457), for the OpenAPI document."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str
    details: dict[str, JsonValue] = {}


def problem_body(error: AifrError, status: int | None = None) -> dict[str, JsonValue]:
    """The problem document of ``error`` (status from the one code table unless given)."""
    payload = error_payload(error)["error"]
    assert isinstance(payload, dict)  # noqa: S101  # error_payload's fixed shape
    return {
        "type": f"urn:aifr:error:{error.code.value}",
        "title": str(payload["type"]),
        "status": status if status is not None else http_status_for(error.code),
        "detail": error.message,
        "code": error.code.value,
        "details": payload["details"],
    }


def _encode(body: dict[str, JsonValue]) -> bytes:
    return json.dumps(body, separators=(",", ":"), default=str).encode("utf-8")


def problem_response(
    error: AifrError,
    status: int | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    extra: dict[str, JsonValue] | None = None,
) -> Response:
    """A ``Response`` carrying the problem document of ``error``."""
    body = problem_body(error, status) | (extra or {})
    return Response(
        _encode(body),
        status_code=int(str(body["status"])),
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


async def send_problem(
    send: Send,
    error: AifrError,
    status: int,
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]  # an empty tuple is a fine default sequence
) -> None:
    """Answer a raw ASGI request with the problem document of ``error``."""
    body = _encode(problem_body(error, status))
    head = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode("ascii")),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def _validation_error(exc: RequestValidationError) -> InputValidationError:
    errors = [
        FieldError(
            path=".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body",
            code=str(item.get("type", "invalid")),
            message=str(item.get("msg", "invalid")),
        )
        for item in exc.errors()
    ]
    where = ", ".join(e.path for e in errors[:5])
    return InputValidationError(f"the request does not match its schema at {where}", errors=errors)


def _http_error(exc: StarletteHTTPException) -> TransportError:
    if exc.status_code == 404:
        return TransportError(
            "no such route; GET /openapi.json lists them", code=ErrorCode.TRANSPORT_NOT_FOUND
        )
    if exc.status_code == 405:
        return TransportError(
            f"method not allowed here: {exc.detail}", code=ErrorCode.TRANSPORT_METHOD_NOT_ALLOWED
        )
    return TransportError(str(exc.detail), code=ErrorCode.TRANSPORT_FAILED)


def error_response(exc: AifrError) -> Response:
    """The answer to an :class:`AifrError` a route raised (``Retry-After`` where it says)."""
    headers = None
    retry = exc.details.get("retry_after_s")
    if isinstance(retry, (int, float)):
        headers = {"Retry-After": str(max(1, math.ceil(retry)))}
    return problem_response(exc, headers=headers)


def unexpected_response(method: str, path: str, exc: Exception) -> Response:
    """The 500 answer to an exception no handler expected (logged with its traceback)."""
    logger.exception("unhandled error on %s %s", method, path, exc_info=exc)
    error = AifrError(f"internal error ({type(exc).__name__}); see the server log")
    return problem_response(error, 500)


def install_problem_handlers(api: FastAPI) -> None:
    """Answer every error (aifr's, validation, routing, unexpected) as a problem document."""

    async def aifr_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, AifrError)  # noqa: S101  # registered for AifrError only
        return error_response(exc)

    async def validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)  # noqa: S101  # registered for it only
        return problem_response(_validation_error(exc))

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101  # registered for it only
        return problem_response(_http_error(exc), exc.status_code, headers=exc.headers)

    async def unexpected(request: Request, exc: Exception) -> Response:
        return unexpected_response(request.method, request.url.path, exc)

    api.add_exception_handler(AifrError, aifr_error)
    api.add_exception_handler(RequestValidationError, validation)
    api.add_exception_handler(StarletteHTTPException, http_error)
    api.add_exception_handler(Exception, unexpected)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "model": Problem,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        "description": text,
    }
    for status, text in (
        (401, "missing, unknown, expired or revoked token"),
        (403, "refused by policy, or a cross-origin request"),
        (413, "request body too large"),
        (422, "the request does not match its schema"),
        (429, "this token's rate limit is spent (see Retry-After)"),
    )
}
"""The error answers every authenticated route may give, for the OpenAPI document."""
