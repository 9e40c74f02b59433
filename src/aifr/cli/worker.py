"""``aifr worker``: resume unfinished runs, deliver webhooks, take signed approval callbacks.

uvicorn, Starlette and httpx are imported by the command itself, not by this module:
every ``aifr`` command loads this module, and only the worker needs them.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer

from aifr import __version__
from aifr.app import App, build_app
from aifr.cli.console import console, fail
from aifr.cli.signals import StopOnSignals
from aifr.cli.status import attach_metrics
from aifr.cli.upstream_runtime import attach_upstreams, detach_upstreams
from aifr.errors import AifrError, ConfigError
from aifr.observability import configure_logging
from aifr.workflows import Retention, Worker
from aifr.workflows.presence import Presence, worker_info
from aifr.workflows.retention import DAY_S

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer


__all__ = ["worker"]


def _secret(app: App) -> bytes | None:
    secret = app.settings.approvals.webhook_secret
    return secret.get_secret_value().encode() if secret is not None else None


CALLBACK_STOP_S: Final = 10.0
"""Longest the worker's exit waits for its approval callback server to finish."""


def _callback_server(app: App, worker: Worker, host: str, port: int) -> Callable[[], None]:
    """Serve signed approval decisions on ``host:port`` in a thread; what stops the server.

    Stopping asks the server to exit and waits for its thread (up to
    :data:`CALLBACK_STOP_S`): the worker closes its database right after, and a decision
    still being written, or the server's event loop still running while the interpreter
    shuts down, must not meet a closed connection or a finalizing runtime (a worker
    stopped by ``SIGTERM`` once exited on ``SIGSEGV`` that way in CI).
    """
    import uvicorn

    from aifr.workflows.notify import approval_callback_app

    secret = _secret(app)
    if secret is None:
        raise ConfigError(
            "approvals.webhook_secret must be set to accept signed approval callbacks",
            key="approvals.webhook_secret",
        )
    callback = approval_callback_app(
        app.approvals,
        secret,
        window_s=app.settings.approvals.replay_window_s,
        on_decided=worker.wake,
    )
    server = uvicorn.Server(uvicorn.Config(callback, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="aifr-approval-callback", daemon=True)
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(CALLBACK_STOP_S)

    return stop


def _retention(app: App) -> Retention | None:
    """``workflows.retain_finished_days`` as the worker's hourly pruning, if set."""
    days = app.settings.workflows.retain_finished_days
    if days is None:
        return None
    return Retention(
        app.runs,
        older_than_s=days * DAY_S,
        actor=app.settings.principal,
        details={"worker": app.workflows.owner, "rule": f"workflows.retain_finished_days={days:g}"},
    )


def _metrics_server(app: App, host: str, port: int) -> WSGIServer:
    from prometheus_client import start_http_server

    metrics = attach_metrics(app)
    try:
        exporter, _ = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise ConfigError(
            f"--metrics-port {port}: cannot listen on {host}:{port}: {exc.strerror}",
            key="metrics_port",
        ) from exc
    console.print(f"metrics on http://{host}:{exporter.server_port}/metrics")
    return exporter


def worker(
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    poll: Annotated[float, typer.Option("--poll", min=0.01, help="Seconds between passes.")] = 0.5,
    callback_port: Annotated[
        int | None,
        typer.Option(
            "--callback-port",
            min=0,
            max=65535,
            help="Serve the signed approval callback on this port.",
        ),
    ] = None,
    callback_host: Annotated[str, typer.Option("--callback-host")] = "127.0.0.1",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            help="Serve Prometheus metrics at /metrics on this port (the metrics extra).",
        ),
    ] = None,
    metrics_host: Annotated[str, typer.Option("--metrics-host")] = "127.0.0.1",
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Runs driven at once (threads).")
    ] = 1,
    project: Annotated[Path, typer.Option("--project", "-p", help="Project folder.")] = Path(),
) -> None:
    """Resume unfinished runs (crashes, decided approvals) and deliver notifications."""
    from aifr.workflows.notify import WebhookNotifier

    try:
        app = build_app(project)
        configure_logging(app.settings.log_level)
        gateway = attach_upstreams(app, command="worker")
        secret = _secret(app)
        if app.settings.approvals.webhook_url and secret is None:
            raise ConfigError(
                "approvals.webhook_url is set but approvals.webhook_secret is not: "
                "webhooks are always signed",
                key="approvals.webhook_secret",
            )
        notifier = WebhookNotifier(app.runs, secret) if secret is not None else None
        helpers = [app.new_engine() for _ in range(concurrency - 1)]
        loop = Worker(
            app.workflows,
            notifier=notifier,
            poll_s=poll,
            helpers=helpers,
            retention=_retention(app),
        )
        stop_server = (
            _callback_server(app, loop, callback_host, callback_port)
            if callback_port is not None
            else None
        )
        exporter = (
            _metrics_server(app, metrics_host, metrics_port) if metrics_port is not None else None
        )
    except AifrError as exc:
        fail(exc)

    lease_ttl_s = app.settings.workflows.lease_ttl_s
    # A worker started while its database restarts waits up to a lease's time to live
    # for it to come back, as long as its runs would wait for another worker.
    presence = Presence(
        app.workers,
        worker_info(app.workflows.owner, concurrency, __version__),
        every_s=lease_ttl_s / 3,
        retry_for_s=lease_ttl_s,
    )

    def stop() -> None:
        loop.stop()
        presence.cancel()

    # The handler takes no lock (see aifr.cli.signals), and it stays for the shutdown, so
    # a second signal (a double Ctrl-C) cannot cut the closing below short.
    with contextlib.nullcontext() if once else StopOnSignals(stop):
        try:
            if once:
                driven = loop.turn()
                console.print(f"resumed {len(driven)} run(s)")
                for view in driven:
                    console.print(f"  {view.run.id}: {view.state.value}")
                return
            unwatch = app.watch_runs(loop.wake)
            # What start-up built (modules, the app, its engines) lives as long as the
            # worker: out of the collector's sight, a full collection no longer walks it
            # (about 93,000 objects, 40 to 60 ms a pass, every few thousand steps). Its
            # garbage is collected first, so none is kept for good.
            gc.collect()
            gc.freeze()
            try:
                with presence:
                    # Printed once the worker is registered: whoever waits for this line
                    # (an operator, a supervisor, a test) then finds it in `aifr workers`.
                    console.print(
                        f"aifr worker {app.workflows.owner} polling every {poll:g}s"
                        f"{' (and woken by NOTIFY)' if unwatch else ''}, "
                        f"{concurrency} run(s) at once"
                    )
                    loop.run()
            finally:
                if unwatch is not None:
                    unwatch()
        except AifrError as exc:
            fail(exc)
        finally:
            if stop_server is not None:
                stop_server()
            if exporter is not None:
                exporter.shutdown()
            if notifier is not None:
                notifier.close()
            detach_upstreams(gateway)
            app.close()
