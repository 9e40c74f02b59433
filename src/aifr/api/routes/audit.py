"""``/v1/audit``: read the trail, export it as JSON lines, and verify its hash chain."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query
from pydantic import BaseModel, JsonValue
from starlette.responses import StreamingResponse

from aifr.api.auth import authorize
from aifr.api.problems import ERROR_RESPONSES
from aifr.api.routes.deps import BEARER, AppDep, CallerDep
from aifr.app import App
from aifr.audit import load_or_create_signing_key, public_key_hex, record_line

__all__ = ["VerifyView", "router"]

router = APIRouter(
    prefix="/v1/audit", tags=["audit"], responses=ERROR_RESPONSES, dependencies=BEARER
)

Since = Annotated[str | None, Query(description="ISO 8601 time; records at or after it")]
Until = Annotated[str | None, Query(description="ISO 8601 time; records before it")]


class VerifyView(BaseModel):
    """What ``aifr audit verify --json`` prints: ``ok``, or the first bad record and why."""

    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None
    problem: JsonValue
    message: str
    checkpoint_seq: int | None


@router.get("", response_model=list[dict[str, Any]])
async def read_audit(
    app: AppDep,
    who: CallerDep,
    after_seq: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,  # SQLite INTEGER range
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    principal: Annotated[str | None, Query(max_length=256)] = None,
) -> list[dict[str, Any]]:
    """Records after ``after_seq``, oldest first (page with the last ``seq`` seen)."""
    authorize(app.policy, who, "api.audit.read")
    return await anyio.to_thread.run_sync(
        lambda: [
            r.to_dict()
            for r in app.ledger.records(principal=principal, limit=limit, after_seq=after_seq)
        ]
    )


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "JSON lines"}},
)
async def export_audit(
    app: AppDep, who: CallerDep, since: Since = None, until: Until = None
) -> StreamingResponse:
    """The trail as JSON lines (one record per line, keys sorted), as ``aifr audit export``."""
    authorize(app.policy, who, "api.audit.export")
    records = iter(await anyio.to_thread.run_sync(lambda: list(app.ledger.records(since, until))))

    def lines() -> Iterator[str]:
        for record in records:
            yield record_line(record) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def _verify(app: App) -> VerifyView:
    key_path = app.settings.path(app.settings.audit.signing_key_file)
    trusted = public_key_hex(load_or_create_signing_key(key_path)) if key_path.exists() else None
    return VerifyView.model_validate(app.ledger.verify(trusted_key=trusted).to_dict())


@router.get("/verify", response_model=VerifyView)
async def verify_audit(app: AppDep, who: CallerDep) -> VerifyView:
    """Walk the hash chain (and the project's signed checkpoints); ``ok`` says if it holds."""
    authorize(app.policy, who, "api.audit.read")
    return await anyio.to_thread.run_sync(lambda: _verify(app))
