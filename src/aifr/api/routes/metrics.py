"""``/metrics``: the Prometheus text of the process's runtime (``aifr serve --metrics``).

The same metrics as ``aifr worker --metrics-port`` and ``aifr mcp --transport http
--metrics`` (:func:`aifr.cli.status.attach_metrics`), behind the same bearer tokens as
every other route and the route operation ``api.metrics.read``, on the server's own
port and TLS. The renderer is handed in by the command, so this layer imports no
prometheus-client.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from fastapi import APIRouter, Request
from starlette.responses import Response

from aifr.api.auth import authorize
from aifr.api.problems import ERROR_RESPONSES
from aifr.api.routes.deps import BEARER, AppDep, CallerDep

__all__ = ["MetricsRenderer", "router"]

MetricsRenderer = Callable[[], tuple[bytes, str]]
"""Renders the metrics: the body and its content type (Prometheus text format)."""

router = APIRouter(tags=["metrics"], responses=ERROR_RESPONSES, dependencies=BEARER)


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, app: AppDep, who: CallerDep) -> Response:
    """Invocations, latencies, workflow runs by state, queue depth and backlogs."""
    authorize(app.policy, who, "api.metrics.read")
    render: MetricsRenderer = request.app.state.metrics
    # A scrape reads the levels from the database: off the event loop.
    body, content_type = await anyio.to_thread.run_sync(render)
    return Response(body, media_type=content_type)
