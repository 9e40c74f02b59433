"""``/v1/knowledge/search``: hybrid search of the ingested repositories (``knowledge.search``).

The call goes through ``Runtime.invoke`` as the token's principal: the policy decides
the call and then each repository, and the ledger records it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import JsonValue
from starlette.responses import Response

from aifr.api.problems import ERROR_RESPONSES
from aifr.api.routes.deps import BEARER, AppDep, CallerDep
from aifr.api.routes.governed import governed_call

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/knowledge", tags=["knowledge"], responses=ERROR_RESPONSES, dependencies=BEARER
)


@router.get("/search", response_model=dict[str, Any])
async def search(
    app: AppDep,
    who: CallerDep,
    q: Annotated[str, Query(min_length=1, max_length=2000, description="what to look for")],
    repo: Annotated[str | None, Query(max_length=200)] = None,
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Response:
    """Hits (repo, path, lines, snippet, score) and which repositories were searched, and why."""
    inputs: dict[str, JsonValue] = {"query": q, "k": k}
    if repo:
        inputs["repo"] = repo
    return await governed_call(app, who, "knowledge.search", inputs)
