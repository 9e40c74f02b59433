"""``/v1/workers``: the ``aifr worker`` processes sharing the database, as ``aifr workers`` lists them."""

from __future__ import annotations

import anyio
from fastapi import APIRouter
from pydantic import BaseModel

from aifr.api.auth import authorize
from aifr.api.problems import ERROR_RESPONSES
from aifr.api.routes.deps import BEARER, AppDep, CallerDep
from aifr.workflows.presence import known_workers

__all__ = ["WorkerView", "router"]

router = APIRouter(
    prefix="/v1/workers", tags=["workers"], responses=ERROR_RESPONSES, dependencies=BEARER
)


class WorkerView(BaseModel):
    """One worker process: where it runs, what it holds, when it was last seen."""

    id: str
    state: str
    host: str
    pid: int
    concurrency: int
    runs: int
    version: str
    started_at: float
    seen_at: float


@router.get("", response_model=list[WorkerView])
async def list_workers(app: AppDep, who: CallerDep) -> list[WorkerView]:
    """Workers newest first; ``state`` is ``live``, ``lost`` or ``exited`` (see ``aifr workers``)."""
    authorize(app.policy, who, "api.runs.read")
    ttl_s = app.settings.workflows.lease_ttl_s
    known = await anyio.to_thread.run_sync(lambda: known_workers(app.workers, ttl_s))
    return [
        WorkerView(
            id=w.id,
            state=state,
            host=w.host,
            pid=w.pid,
            concurrency=w.concurrency,
            runs=w.runs,
            version=w.version,
            started_at=w.started_at,
            seen_at=w.seen_at,
        )
        for w, state in known
    ]
