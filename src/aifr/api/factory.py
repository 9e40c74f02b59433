"""``create_api``: the FastAPI application of ``aifr serve``, and ``serve_api`` to run it.

The routes are thin: each checks the caller through the policy engine (or leaves it to
``Runtime.invoke`` and the approver rules) and calls the same objects the CLI does.
:class:`~aifr.api.auth.ApiGuard` wraps the whole application, so nothing, not even the
OpenAPI document, answers without a token, except ``/health``.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from aifr import __version__
from aifr.api.auth import ApiGuard
from aifr.api.problems import install_problem_handlers
from aifr.api.routes import (
    approvals,
    audit,
    capabilities,
    findings,
    health,
    knowledge,
    metrics,
    runs,
    workers,
)
from aifr.api.routes.metrics import MetricsRenderer
from aifr.api.tls import server_context
from aifr.app import App
from aifr.errors import TransportError

__all__ = ["DECISION_PATH", "create_api", "serve_api"]

logger = logging.getLogger(__name__)

DECISION_PATH = ("/v1/approvals/", "/decision")
"""The signed approval callback: ``POST /v1/approvals/{id}/decision`` (HMAC, no token)."""


class _StripPrefix:
    """Hands ``/v1/approvals/{id}/decision`` to the worker's callback app as ``/approvals/...``."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope["path"])
        await self.app({**scope, "path": path.removeprefix(self.prefix)}, receive, send)


def _signed_callback(app: App) -> ASGIApp | None:
    from aifr.workflows.notify import approval_callback_app

    secret = app.settings.approvals.webhook_secret
    if secret is None:
        return None
    return _StripPrefix(
        approval_callback_app(
            app.approvals,
            secret.get_secret_value().encode(),
            window_s=app.settings.approvals.replay_window_s,
        ),
        "/v1",
    )


def create_api(
    app: App,
    *,
    extend: Callable[[FastAPI], None] | None = None,
    own_auth_prefixes: tuple[str, ...] = (),
    metrics_renderer: MetricsRenderer | None = None,
) -> ASGIApp:
    """The REST API over ``app``, wrapped in its guard (see :mod:`aifr.api.auth`).

    ``metrics_renderer`` adds ``GET /metrics`` (token and ``api.metrics.read``).

    ``extend`` adds routes served by the same process (the console); paths under
    ``own_auth_prefixes`` skip the bearer check because they authenticate themselves
    (the console's session cookie), and keep the origin and size checks.
    """
    api = FastAPI(
        title="aifr",
        version=__version__,
        description="The governed runtime's REST API: every call is authorized, approved "
        "where policy says so, and audited. Errors are RFC 9457 problem documents.",
        docs_url=None,
        redoc_url=None,
    )
    api.state.aifr = app
    api.state.workflow_limiter = anyio.CapacityLimiter(1)
    install_problem_handlers(api)
    for module in (health, capabilities, runs, workers, approvals, audit, findings, knowledge):
        api.include_router(module.router)
    if metrics_renderer is not None:
        api.state.metrics = metrics_renderer
        api.include_router(metrics.router)
    if extend is not None:
        extend(api)
    callback = _signed_callback(app)
    if callback is not None:
        api.router.routes.append(
            Route("/v1/approvals/{approval_id}/decision", callback, methods=["POST"])
        )
    settings = app.settings.api
    # FastAPI traces each request itself while a global OpenTelemetry provider is set; the
    # direct invoke route then leaves every request to it (and to all of them if this
    # FastAPI cannot say).
    telemetry = getattr(getattr(api, "_native_telemetry", None), "enabled", None)
    traced: Callable[[], bool] = telemetry if callable(telemetry) else lambda: True
    return ApiGuard(
        api,
        app.tokens,
        app.rates,
        max_body_bytes=settings.max_body_bytes,
        rate_per_s=settings.rate_per_s,
        burst=settings.burst,
        allowed_origins=settings.allowed_origins,
        signed_paths=DECISION_PATH if callback is not None else None,
        own_auth_prefixes=own_auth_prefixes,
        direct=capabilities.DirectInvoke(app, traced=traced),
    )


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise TransportError(
            f"cannot listen on {host}:{port}: {exc.strerror}", host=host, port=port
        ) from exc
    return sock


def serve_api(
    asgi: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``asgi`` until SIGINT/SIGTERM; TLS 1.3 only when a certificate is given.

    ``port=0`` picks a free port; ``on_ready`` receives the base URL once it listens.

    Raises:
        ConfigError: only one of the TLS pair is given, or it does not load.
        TransportError: the address cannot be bound.
    """
    import uvicorn

    from aifr.errors import ConfigError

    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("give both --tls-cert and --tls-key, or neither", key="api.tls_cert")
    context = server_context(tls_cert, tls_key) if tls_cert and tls_key else None
    sock = _listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    scheme = "https" if context is not None else "http"
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    config = uvicorn.Config(asgi, log_level="warning", access_log=False, lifespan="off")
    config.load()
    config.ssl = context  # after load(): ours, TLS 1.3 only, whatever uvicorn's version
    server: Any = uvicorn.Server(config)

    async def run() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: server.serve(sockets=[sock]))
            while not (server.started or server.should_exit):
                await anyio.sleep(0.01)
            if server.started and on_ready is not None:
                on_ready(f"{scheme}://{shown}:{bound_port}")

    try:
        # uvicorn's loop="auto" picks uvloop only when uvicorn starts the loop itself; here
        # anyio does, so ask it for uvloop when installed (the ``api`` extra installs it).
        uvloop = importlib.util.find_spec("uvloop") is not None and sys.platform != "win32"
        anyio.run(run, backend_options={"use_uvloop": uvloop})
    finally:
        sock.close()
