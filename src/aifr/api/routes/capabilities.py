"""``/v1/capabilities``: list and show capabilities, and invoke one through ``Runtime.invoke``.

The invoke route is the API's hot path, so :class:`DirectInvoke` also serves it straight
from :class:`~aifr.api.auth.ApiGuard`, without the framework's routing and dependency
solving: for a request the route would accept (a well-formed ref, a JSON body that
validates as :class:`InvokeRequest`) it answers with the same bytes, status and headers
through the same ``_invoke`` and ``_answer``; anything else (for which the route would
answer a 422 problem document or another error of the framework's), and every request
while FastAPI's own OpenTelemetry instrumentation is on (a global provider is configured
in the process), goes to the FastAPI route, which stays the one the OpenAPI document
describes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Scope, Send

from aifr.api.auth import Caller, authorize
from aifr.api.problems import ERROR_RESPONSES, error_response, problem_response, unexpected_response
from aifr.api.routes.deps import BEARER, AppDep, CallerDep
from aifr.app import App
from aifr.capabilities import CapabilitySpec
from aifr.errors import AifrError, ErrorCode
from aifr.invocation import CallOptions, Result

__all__ = ["CapabilitySummary", "DirectInvoke", "InvokeRequest", "router"]

REF_CHARS = r"[A-Za-z0-9_.@\-]{1,220}"
INVOKE_PREFIX, INVOKE_SUFFIX = "/v1/capabilities/", "/invoke"

router = APIRouter(
    prefix="/v1/capabilities", tags=["capabilities"], responses=ERROR_RESPONSES, dependencies=BEARER
)

CapabilityRef = Annotated[
    str, Path(description="capability id, or id@version", pattern=f"^{REF_CHARS}$")
]


class CapabilitySummary(BaseModel):
    """One capability as the list shows it."""

    id: str
    version: str
    description: str
    operation_type: str
    risk: str
    tags: list[str]


class InvokeRequest(BaseModel):
    """One governed call: the inputs, and optionally a retry key or a granted approval."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, JsonValue] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    approval_id: str | None = Field(default=None, min_length=1, max_length=200)


def _summary(spec: CapabilitySpec) -> CapabilitySummary:
    return CapabilitySummary(
        id=spec.id,
        version=spec.version,
        description=spec.description,
        operation_type=spec.operation_type.value,
        risk=spec.effective_risk.value,
        tags=list(spec.tags),
    )


@router.get("", response_model=list[CapabilitySummary])
async def list_capabilities(app: AppDep, who: CallerDep) -> list[CapabilitySummary]:
    """Registered capabilities (latest versions), sorted by id."""
    authorize(app.policy, who, "api.capabilities.read")
    return [_summary(spec) for spec in app.registry.list()]


@router.get("/{capability_ref}", response_model=dict[str, Any])
async def show_capability(
    capability_ref: CapabilityRef, app: AppDep, who: CallerDep
) -> dict[str, Any]:
    """One capability's full spec (schemas, side effects, risk, compensation)."""
    authorize(app.policy, who, "api.capabilities.read")
    return app.registry.resolve(capability_ref).spec.model_dump(mode="json")


@router.post(
    "/{capability_ref}/invoke",
    response_model=dict[str, Any],
    responses={202: {"description": "an approval is pending; its id is in the result"}},
)
async def invoke(
    capability_ref: CapabilityRef,
    app: AppDep,
    who: CallerDep,
    call: Annotated[InvokeRequest, Body()],
) -> Response:
    """Invoke a capability as the token's principal (policy, approval, audit all apply).

    200 with the result when it ran; 202 when an approval is pending; otherwise the
    problem document of the error, with the whole ``result`` beside it.
    """
    return _answer(await _invoke(app, capability_ref, call, who))


async def _invoke(app: App, ref: str, call: InvokeRequest, who: Caller) -> Result:
    return await app.runtime.ainvoke(
        ref,
        call.inputs,
        who.principal,
        CallOptions(
            roles=who.roles,
            idempotency_key=call.idempotency_key,
            approval_id=call.approval_id,
        ),
    )


def _answer(result: Result) -> Response:
    body = result.to_dict()
    if result.error is None:
        return JSONResponse(body)
    if result.error_code is ErrorCode.APPROVAL_REQUIRED:
        return JSONResponse(body, status_code=202)
    return problem_response(result.error, extra={"result": body})


def _json_content(scope: Scope) -> bool:
    """Whether the body is declared ``application/json`` (other JSON types: the route)."""
    value: bytes
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


async def _no_receive() -> Message:  # the body is read; a plain Response never receives
    return {"type": "http.disconnect"}


class DirectInvoke:
    """``POST /v1/capabilities/{ref}/invoke`` answered from the guard (the module docstring)."""

    def __init__(self, app: App, *, traced: Callable[[], bool]) -> None:
        """``traced``: whether the framework would trace a request now (then it serves all)."""
        self.app = app
        self.traced = traced
        self._ref = re.compile(REF_CHARS)

    async def __call__(self, scope: Scope, body: bytes, who: Caller, send: Send) -> bool:
        """Answer a well-formed invoke request and return ``True``; else ``False``."""
        path: str = scope["path"]
        if (
            scope["method"] != "POST"
            or scope.get("root_path")
            or not path.startswith(INVOKE_PREFIX)
            or not path.endswith(INVOKE_SUFFIX)
        ):
            return False
        ref = path[len(INVOKE_PREFIX) : -len(INVOKE_SUFFIX)]
        if self._ref.fullmatch(ref) is None or not _json_content(scope) or self.traced():
            return False
        try:
            data = json.loads(body)  # as the route reads it (``Request.json``)
        except ValueError:
            return False
        if not isinstance(data, dict):
            return False
        try:
            call = InvokeRequest.model_validate(data)
        except ValidationError:
            return False
        try:
            response = _answer(await _invoke(self.app, ref, call, who))
        except AifrError as exc:
            response = error_response(exc)
        except Exception as exc:  # noqa: BLE001  # the 500 FastAPI's catch-all handler gives
            response = unexpected_response("POST", path, exc)
        await response(scope, _no_receive, send)
        return True
