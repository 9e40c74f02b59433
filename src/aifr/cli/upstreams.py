"""``aifr upstreams list|test``: the third-party MCP servers the gateway governs.

``list`` starts each upstream to read its tools, and shows the capability id, the
operation and risk each tool got (``declared`` or the HIGH default) and whether it is
exposed; ``test NAME`` also pings the server. The MCP SDK is imported inside the
commands, so ``aifr --help`` never pays for it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from aifr.cli.console import console, fail, print_json
from aifr.errors import AifrError

if TYPE_CHECKING:
    from aifr.transports.mcp.gateway import Gateway
    from aifr.transports.mcp.upstream import Upstream

__all__ = ["app"]

app = typer.Typer(
    help="Third-party MCP servers served through aifr ([[mcp.upstreams]]).",
    no_args_is_help=True,
)

ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="Project folder.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _gateway(project: Path) -> Gateway:
    from aifr.app import build_secrets
    from aifr.config import load_settings
    from aifr.transports.mcp.gateway import Gateway

    try:
        settings = load_settings(project, require_project=True)
        return Gateway(
            settings.mcp.upstreams,
            build_secrets(settings).resolve,
            errlog=sys.stderr,
            catalog_dir=settings.state_path / "upstreams",
        )
    except AifrError as exc:
        fail(exc)


def _report(gateway: Gateway, upstream: Upstream, *, ping: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": upstream.name,
        "transport": "stdio" if upstream.config.command else "http",
        "answers": False,
        "server": None,
        "server_version": None,
        "tools": [],
        "error": None,
    }
    try:
        tools = gateway.tools(upstream)
        if ping:
            row["ping_ms"] = round(upstream.ping() * 1000, 2)
    except AifrError as exc:
        row["error"] = exc.message
        return row
    server = upstream.server
    row.update(
        answers=True,
        server=server.name if server is not None else None,
        server_version=upstream.server_version or None,
        tools=[
            {
                "tool": t.tool,
                "capability": t.capability_id,
                "operation": t.operation,
                "risk": t.risk,
                "declared": t.declared,
                "exposed": t.exposed,
                "changed": t.changed,
            }
            for t in tools
        ],
    )
    return row


def _show(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if not row["answers"]:
            console.print(f"[bold red]{row['name']}[/]: does not answer: {row['error']}")
            continue
        title = f"{row['name']}: {row['server']} {row['server_version']} ({row['transport']})"
        if "ping_ms" in row:
            title += f", ping {row['ping_ms']} ms"
        table = Table(title=title, title_justify="left")
        for column in ("capability", "operation", "risk", "exposed"):
            table.add_column(column, overflow="fold")
        for tool in row["tools"]:
            risk = tool["risk"] + ("" if tool["declared"] else " (undeclared)")
            if tool["changed"]:
                risk += " CHANGED"
            table.add_row(
                tool["capability"], tool["operation"], risk, "yes" if tool["exposed"] else "no"
            )
        console.print(table)


@app.command("list")
def list_upstreams(project: ProjectOption = Path(), as_json: JsonOption = False) -> None:
    """Start each upstream and show its tools, the risk each got, and whether it answers.

    The tools listed become the reviewed list ``aifr mcp`` serves; a tool that changed
    since the last review is marked CHANGED.
    """
    gateway = _gateway(project)
    try:
        rows = [_report(gateway, upstream, ping=False) for upstream in gateway.upstreams()]
    finally:
        gateway.close()
    if as_json:
        print_json(rows)
    elif not rows:
        console.print(
            "No upstream is configured ([[mcp.upstreams]] in aifr.toml); see docs/gateway.md."
        )
    else:
        _show(rows)


@app.command("test")
def test_upstream(
    name: Annotated[str, typer.Argument(help="The upstream's name.")],
    project: ProjectOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Start one upstream, list its tools and ping it; exit 1 when it does not answer."""
    gateway = _gateway(project)
    try:
        try:
            upstream = gateway.upstream(name)
        except AifrError as exc:
            fail(exc)
        row = _report(gateway, upstream, ping=True)
    finally:
        gateway.close()
    if as_json:
        print_json(row)
    else:
        _show([row])
    if not row["answers"]:
        raise typer.Exit(1)
