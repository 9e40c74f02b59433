"""``aifr mcp``: serve the project to MCP clients; ``config`` and ``token`` helpers.

The MCP SDK, uvicorn and the runtime are imported inside the commands, so ``aifr
--help`` and the other commands never pay for them, and ``aifr mcp`` starts fast
enough for clients that launch it per session.
"""

from __future__ import annotations

import shutil
import ssl
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aifr.cli import tokens
from aifr.cli.console import err_console, fail, print_json
from aifr.errors import AifrError, ConfigError

if TYPE_CHECKING:
    from aifr.app import App
    from aifr.config import Settings
    from aifr.transports.mcp.auth import McpIdentity

__all__ = ["app"]

app = typer.Typer(
    help="Serve capabilities and workflows as governed MCP tools (stdio, HTTP, Unix socket).",
)
app.add_typer(tokens.app, name="token")  # the older name of 'aifr tokens'


ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="Project folder.")]


class Transport(StrEnum):
    """How clients reach the server."""

    STDIO = "stdio"
    HTTP = "http"
    UDS = "uds"


class ClientTransport(StrEnum):
    """How a client configured by ``aifr mcp config`` reaches the server."""

    STDIO = "stdio"
    HTTP = "http"


class ToolNameStyle(StrEnum):
    """How ``aifr mcp`` lists tools (see ``aifr.transports.mcp.naming``)."""

    IDS = "ids"
    PORTABLE = "portable"


class ClientKind(StrEnum):
    """MCP clients whose configuration snippet ``aifr mcp config`` prints."""

    CLAUDE = "claude"
    CURSOR = "cursor"


def _settings(project: Path) -> Settings:
    from aifr.config import load_settings

    return load_settings(project, require_project=True)


def _local_identity(settings: Settings) -> McpIdentity:
    from aifr.transports.mcp.auth import McpIdentity

    mcp = settings.mcp
    return McpIdentity(mcp.principal, frozenset(mcp.roles), mcp.operator)


def _tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The TLS 1.3-only context of ``--tls-cert``/``--tls-key``, or ``None`` without them.

    Raises:
        ConfigError: only one of the pair is given, or it does not load.
    """
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("give both --tls-cert and --tls-key, or neither", key="tls")
    from aifr.api.tls import server_context

    return server_context(cert, key)


def _announce(message: str) -> None:
    err_console.print(f"aifr mcp: {message}")


def _refuse_foreign_options(
    transport: Transport,
    *,
    host: str | None,
    port: int | None,
    socket: Path | None,
    metrics: bool = False,
    tls: Path | None = None,
) -> None:
    """Refuse an option of another transport, which would otherwise be ignored.

    ``aifr mcp --port 8765`` without ``--transport http`` served stdio and sat waiting
    on a terminal, with no word that the port was never opened.

    Raises:
        typer.BadParameter: ``--host``/``--port`` without http, ``--socket`` without uds.
    """
    given = (
        ("--host", host, Transport.HTTP),
        ("--port", port, Transport.HTTP),
        ("--metrics", True if metrics else None, Transport.HTTP),
        ("--tls-cert", tls, Transport.HTTP),
    )
    for option, value, owner in (*given, ("--socket", socket, Transport.UDS)):
        if value is not None and transport is not owner:
            raise typer.BadParameter(
                f"{option} is for --transport {owner.value}, and this server uses "
                f"--transport {transport.value}; add --transport {owner.value} or drop {option}",
                param_hint=f"'{option}'",
            )


@app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    transport: Annotated[Transport, typer.Option(help="stdio, http or uds.")] = Transport.STDIO,
    host: Annotated[str | None, typer.Option(help="HTTP address (default mcp.host).")] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="HTTP port; 0 picks a free one (default mcp.port)."),
    ] = None,
    socket: Annotated[
        Path | None, typer.Option("--socket", help="Unix socket path (default mcp.socket).")
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", help="PEM certificate: serve HTTPS, TLS 1.3 only (http)."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="PEM key of --tls-cert.")
    ] = None,
    tool_names: Annotated[
        ToolNameStyle | None,
        typer.Option(
            help="List tools by capability id, or under names matching [A-Za-z0-9_-]{1,64} "
            "(portable: what Claude Desktop and model APIs accept). Default mcp.tool_names."
        ),
    ] = None,
    metrics: Annotated[
        bool,
        typer.Option(
            "--metrics",
            help="With --transport http, serve Prometheus metrics at /metrics (bearer "
            "token required; the metrics extra).",
        ),
    ] = False,
    project: ProjectOption = Path(),
) -> None:
    """Serve the project's capabilities and workflows over MCP (stdio by default).

    Calls may name a tool by its listed name or by its capability id.
    """
    if ctx.invoked_subcommand is not None:
        return
    _refuse_foreign_options(
        transport, host=host, port=port, socket=socket, metrics=metrics, tls=tls_cert or tls_key
    )
    import anyio

    from aifr.app import build_app, build_secrets
    from aifr.observability.logs import configure_logging
    from aifr.transports.mcp import (
        AifrMcpServer,
        ToolNaming,
        UidPrincipals,
        connection_identity,
        fixed_identity,
        http_identity,
        serve_http,
        serve_stdio,
        serve_uds,
    )
    from aifr.transports.mcp.gateway import Gateway
    from aifr.workflows import list_workflows

    try:
        aifr_app = build_app(project, require_project=True)
    except AifrError as exc:
        fail(exc)
    settings = aifr_app.settings
    configure_logging(settings.log_level)
    local = _local_identity(settings)
    naming = ToolNaming(tool_names or settings.mcp.tool_names)
    listing = settings.mcp.list_tools
    gateway = Gateway(
        settings.mcp.upstreams,
        build_secrets(settings).resolve,
        errlog=sys.stderr,
        catalog_dir=settings.state_path / "upstreams",
    )
    try:
        for failure in gateway.register(aifr_app.registry, lazy=True):
            _announce(f"{failure} (its tools are not served)")
        workflows = list_workflows(settings.path(settings.workflows.directory))
        if transport is Transport.STDIO:
            server = AifrMcpServer.from_app(
                aifr_app,
                identity=fixed_identity(local),
                workflows=workflows,
                tool_naming=naming,
                list_tools=listing,
                gateway=gateway,
            )
            anyio.run(serve_stdio, server)
        elif transport is Transport.HTTP:
            server = AifrMcpServer.from_app(
                aifr_app,
                identity=http_identity,
                workflows=workflows,
                tool_naming=naming,
                list_tools=listing,
                gateway=gateway,
            )
            metrics_app = _metrics_app(aifr_app) if metrics else None
            tokens = aifr_app.tokens
            tls = _tls_context(tls_cert, tls_key)
            if not tokens.records():
                _announce(
                    "no tokens yet: every request will get 401 until you run "
                    "'aifr tokens create --principal NAME'"
                )
            anyio.run(
                lambda: serve_http(
                    server,
                    tokens,
                    host=host or settings.mcp.host,
                    port=settings.mcp.port if port is None else port,
                    on_ready=lambda url: _announce(f"serving on {url}"),
                    allowed_origins=settings.mcp.allowed_origins,
                    allowed_hosts=settings.mcp.allowed_hosts,
                    metrics=metrics_app,
                    ssl_context=tls,
                )
            )
        else:
            server = AifrMcpServer.from_app(
                aifr_app,
                identity=connection_identity,
                workflows=workflows,
                tool_naming=naming,
                list_tools=listing,
                gateway=gateway,
            )
            path = socket or settings.path(settings.mcp.socket)
            identities = UidPrincipals(local, dict(settings.mcp.uid_principals))
            anyio.run(
                lambda: serve_uds(
                    server,
                    path,
                    identities,
                    mode=settings.mcp.socket_mode,
                    on_ready=lambda p: _announce(f"serving on unix:{p}"),
                )
            )
    except AifrError as exc:
        fail(exc)
    except KeyboardInterrupt:
        _announce("stopped")
    finally:
        gateway.close()
        aifr_app.close()


def _metrics_app(aifr_app: App) -> object:
    from prometheus_client import make_asgi_app

    from aifr.cli.status import attach_metrics

    return make_asgi_app(registry=attach_metrics(aifr_app).registry)


def _aifr_command() -> list[str]:
    beside = Path(sys.executable).parent / "aifr"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("aifr")
    return [found] if found else [sys.executable, "-m", "aifr"]


@app.command("config")
def config(
    client: Annotated[ClientKind, typer.Option(help="claude or cursor.")] = ClientKind.CLAUDE,
    transport: Annotated[
        ClientTransport, typer.Option(help="stdio (launched by the client) or http.")
    ] = ClientTransport.STDIO,
    name: Annotated[str, typer.Option(help="Server name in the client.")] = "aifr",
    project: ProjectOption = Path(),
) -> None:
    """Print the MCP client configuration snippet for this project.

    Claude and Cursor accept only tool names matching ``[A-Za-z0-9_-]{1,64}`` (Claude
    Desktop refuses the whole tool list otherwise), so the server they launch lists
    portable names; an HTTP server is started by you, with ``--tool-names portable``.
    """
    try:
        settings = _settings(project)
    except AifrError as exc:
        fail(exc)
    root = str(settings.project_dir)
    entry: dict[str, object]
    if transport is ClientTransport.HTTP:
        url = f"http://{settings.mcp.host}:{settings.mcp.port}/mcp"
        token_ref = "${env:AIFR_MCP_TOKEN}" if client is ClientKind.CURSOR else "<token>"
        entry = {"url": url, "headers": {"Authorization": f"Bearer {token_ref}"}}
        if client is ClientKind.CLAUDE:
            entry = {"type": "http", **entry}
        if settings.mcp.tool_names != ToolNameStyle.PORTABLE.value:
            err_console.print(
                "# start the server with: aifr mcp --transport http --tool-names portable "
                f'-p {root}  (or set tool_names = "portable" under [mcp] in aifr.toml)',
                soft_wrap=True,
            )
    else:
        command, *prefix = _aifr_command()
        serve_args = ["mcp", "--transport", "stdio", "--tool-names", ToolNameStyle.PORTABLE.value]
        entry = {"command": command, "args": [*prefix, *serve_args, "-p", root]}
        if client is ClientKind.CURSOR:
            entry = {"type": "stdio", **entry}
    where = {
        ClientKind.CLAUDE: "claude_desktop_config.json (Claude Desktop) or .mcp.json (Claude Code)",
        ClientKind.CURSOR: ".cursor/mcp.json (project) or ~/.cursor/mcp.json (global)",
    }[client]
    err_console.print(f"# add to {where}")
    print_json({"mcpServers": {name: entry}})
