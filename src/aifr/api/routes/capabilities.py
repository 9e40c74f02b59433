"""``/v1/capabilities``: list and show capabilities, and invoke one through ``Runtime.invoke``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from starlette.responses import JSONResponse, Response

from aifr.api.auth import authorize
from aifr.api.problems import ERROR_RESPONSES, problem_response
from aifr.api.routes.deps import BEARER, AppDep, CallerDep
from aifr.capabilities import CapabilitySpec
from aifr.errors import ErrorCode
from aifr.invocation import CallOptions

__all__ = ["CapabilitySummary", "InvokeRequest", "router"]

router = APIRouter(
    prefix="/v1/capabilities", tags=["capabilities"], responses=ERROR_RESPONSES, dependencies=BEARER
)

CapabilityRef = Annotated[
    str, Path(description="capability id, or id@version", pattern=r"^[A-Za-z0-9_.@\-]{1,220}$")
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
    result = await app.runtime.ainvoke(
        capability_ref,
        call.inputs,
        who.principal,
        CallOptions(
            roles=who.roles,
            idempotency_key=call.idempotency_key,
            approval_id=call.approval_id,
        ),
    )
    body = result.to_dict()
    if result.error is None:
        return JSONResponse(body)
    if result.error_code is ErrorCode.APPROVAL_REQUIRED:
        return JSONResponse(body, status_code=202)
    return problem_response(result.error, extra={"result": body})
