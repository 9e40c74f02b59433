"""``aifr serve``: the REST API; ``aifr certs dev``: a self-signed pair for trying TLS.

FastAPI and uvicorn are imported by the commands, not by this module: every ``aifr``
command loads it, and only ``serve`` needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aifr.cli.console import console, err_console, fail
from aifr.errors import AifrError, ConfigError

__all__ = ["certs_app", "serve"]

certs_app = typer.Typer(
    help="TLS certificates for 'aifr serve' and 'aifr mcp'.", no_args_is_help=True
)

ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="Project folder.")]


def _path(value: str | None, settings_path: Path | None) -> Path | None:
    return Path(value) if value is not None else settings_path


def serve(
    host: Annotated[str | None, typer.Option(help="Address (default api.host, 127.0.0.1).")] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Port; 0 picks a free one (default api.port, 8787)."),
    ] = None,
    tls_cert: Annotated[
        str | None, typer.Option("--tls-cert", help="PEM certificate: serve HTTPS, TLS 1.3 only.")
    ] = None,
    tls_key: Annotated[str | None, typer.Option("--tls-key", help="PEM key of --tls-cert.")] = None,
    metrics: Annotated[
        bool,
        typer.Option(
            "--metrics",
            help="Serve Prometheus metrics at /metrics (bearer token and api.metrics.read; "
            "the metrics extra).",
        ),
    ] = False,
    project: ProjectOption = Path(),
) -> None:
    """Serve the REST API and the web console at /console (tokens from 'aifr tokens create')."""
    try:
        from aifr.api import create_api, serve_api
    except ImportError as exc:  # fastapi is the 'api' extra
        fail(
            ConfigError(
                f"aifr serve needs the api extra: pip install 'aifr[api]' ({exc.name} missing)",
                extra="api",
            )
        )
    from aifr.app import build_app
    from aifr.cli.status import metrics_renderer
    from aifr.console import CONSOLE_PREFIX, install_console
    from aifr.observability.logs import configure_logging

    try:
        app = build_app(project, require_project=True)
    except AifrError as exc:
        fail(exc)
    settings = app.settings
    configure_logging(settings.log_level)
    api = settings.api
    cert = _path(tls_cert, settings.path(api.tls_cert) if api.tls_cert else None)
    key = _path(tls_key, settings.path(api.tls_key) if api.tls_key else None)
    try:
        if not app.tokens.records():
            err_console.print(
                "aifr serve: no tokens yet: every request but /health gets 401 until you run "
                "'aifr tokens create --principal NAME'"
            )
        render = metrics_renderer(app) if metrics else None
        serve_api(
            create_api(
                app,
                extend=install_console,
                own_auth_prefixes=(CONSOLE_PREFIX,),
                metrics_renderer=render,
            ),
            host=host or api.host,
            port=api.port if port is None else port,
            tls_cert=cert,
            tls_key=key,
            on_ready=lambda url: err_console.print(f"aifr serve: serving on {url}"),
        )
    except AifrError as exc:
        fail(exc)
    except KeyboardInterrupt:
        pass
    finally:
        err_console.print("aifr serve: stopped")
        app.close()


@certs_app.command("dev")
def certs_dev(
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for the pair (default .aifr/tls).")
    ] = None,
    host: Annotated[str, typer.Option(help="Host name the certificate names.")] = "localhost",
    days: Annotated[int, typer.Option(min=1, max=397, help="Days it stays valid.")] = 30,
    project: ProjectOption = Path(),
) -> None:
    """Write a self-signed certificate and key for trying TLS on this machine."""
    from aifr.api.tls import write_dev_certificate

    folder = out if out is not None else project / ".aifr" / "tls"
    try:
        cert, key = write_dev_certificate(folder, host=host, days=days)
    except AifrError as exc:
        fail(exc)
    console.print(f"wrote {cert} and {key} (self-signed, {days} days; for this machine only)")
    console.print(f"try: aifr serve --tls-cert {cert} --tls-key {key}")
