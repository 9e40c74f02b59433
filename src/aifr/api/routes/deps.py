"""What every route depends on: the project's :class:`~aifr.app.App` and the caller."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from aifr.api.auth import Caller, caller
from aifr.app import App

__all__ = ["BEARER", "AppDep", "CallerDep", "bearer_scheme", "project_app", "workflow_lock"]

bearer_scheme = HTTPBearer(auto_error=False, description="a token from 'aifr tokens create'")
"""Declares the bearer scheme in the OpenAPI document; :class:`ApiGuard` does the checking."""


async def project_app(request: Request) -> App:
    """The project the server serves (``async``: a plain read, no worker-thread hand-off)."""
    app: App = request.app.state.aifr
    return app


async def workflow_lock(request: Request) -> anyio.CapacityLimiter:
    """One workflow operation at a time: the engine is driven from worker threads.

    ``async`` as every dependency here that does no I/O: FastAPI runs a plain ``def``
    dependency in a worker thread, one hand-off per dependency per request.
    """
    limiter: anyio.CapacityLimiter = request.app.state.workflow_limiter
    return limiter


AppDep = Annotated[App, Depends(project_app)]
CallerDep = Annotated[Caller, Depends(caller)]
BEARER = [Depends(bearer_scheme)]
"""Router dependencies that put the bearer scheme in the OpenAPI document."""
