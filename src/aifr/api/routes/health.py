"""``/health`` (public: the process answers) and ``/ready`` (the state database and policy)."""

from __future__ import annotations

import anyio
from fastapi import APIRouter
from pydantic import BaseModel

from aifr import __version__
from aifr.api.problems import ERROR_RESPONSES
from aifr.api.routes.deps import BEARER, AppDep, CallerDep

__all__ = ["Health", "Readiness", "router"]

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """The process is up."""

    status: str
    version: str


class Readiness(BaseModel):
    """The process can serve: its state database answers and its policy is loaded."""

    status: str
    audit_head_seq: int
    policy_rules: int
    capabilities: int


@router.get("/health", response_model=Health)
async def health() -> Health:
    """Whether the process answers (no token needed)."""
    return Health(status="ok", version=__version__)


@router.get("/ready", response_model=Readiness, responses=ERROR_RESPONSES, dependencies=BEARER)
async def ready(app: AppDep, _caller: CallerDep) -> Readiness:
    """Whether the state database answers and the policy is loaded (503 otherwise)."""
    head = await anyio.to_thread.run_sync(app.ledger.head)
    return Readiness(
        status="ready",
        audit_head_seq=head.seq,
        policy_rules=len(app.policy.policy.rules),
        capabilities=len(app.registry.list()),
    )
