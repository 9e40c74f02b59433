"""``aifr plugins list|show``: what is installed, what loaded, and why the rest did not."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from aifr.app import build_app
from aifr.cli.console import console, fail, print_json
from aifr.errors import AifrError
from aifr.plugins import PluginReport, PluginSet, PluginState

app = typer.Typer(help="Inspect installed plugins.", no_args_is_help=True)

ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="Project folder.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]

_STATE_STYLE = {
    PluginState.LOADED: "green",
    PluginState.BROKEN: "bold red",
    PluginState.DISABLED: "dim",
}


def _plugins(project: Path) -> PluginSet:
    try:
        aifr_app = build_app(project, report_all_plugins=True)
    except AifrError as exc:
        fail(exc)
    return aifr_app.plugins


@app.command("list")
def list_plugins(project: ProjectOption = Path(), as_json: JsonOption = False) -> None:
    """List installed and enabled plugins: version, state, reason, capabilities."""
    plugins = _plugins(project)
    if as_json:
        print_json([report.to_dict() for report in plugins.reports])
        return
    table = Table(title=f"{len(plugins)} plugins", title_justify="left")
    for column in ("name", "version", "state", "capabilities", "reason"):
        table.add_column(column, overflow="fold")
    for report in plugins.reports:
        table.add_row(
            report.name,
            report.version or "-",
            Text(report.state.value, style=_STATE_STYLE[report.state]),
            ", ".join(report.capabilities) or "-",
            report.reason or "",
        )
    console.print(table)
    if not plugins.reports:
        console.print(
            "No plugin is installed (entry point group aifr.plugins); see docs/plugins.md."
        )


@app.command("show")
def show_plugin(
    name: Annotated[str, typer.Argument(help="Plugin name.")],
    project: ProjectOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Show one plugin: its state and reason, manifest, permissions and capabilities."""
    plugins = _plugins(project)
    try:
        report = plugins.get(name)
    except AifrError as exc:
        fail(exc)
    if as_json:
        print_json(report.to_dict())
        return
    _print_report(report)


def _print_report(report: PluginReport) -> None:
    console.print(
        Text.assemble(
            (report.name, "bold"),
            f" {report.version or ''}  ",
            (report.state.value, _STATE_STYLE[report.state]),
        )
    )
    if report.reason is not None:
        code = f" {report.error.code.value}" if report.error is not None else ""
        console.print(Text.assemble(("reason", "dim"), (code, "dim"), ": ", report.reason))
    rows = [
        ("entry point", report.target or "-"),
        ("distribution", report.distribution or "-"),
    ]
    manifest = report.manifest
    if manifest is not None:
        rows += [
            ("description", manifest.description or "-"),
            ("aifr", manifest.aifr),
            ("capabilities", ", ".join(manifest.capabilities)),
            ("fs roots", ", ".join(manifest.fs_roots) or "none"),
            ("hosts", ", ".join(manifest.hosts) or "none"),
            ("commands", ", ".join(manifest.commands) or "none"),
        ]
    for label, value in rows:
        console.print(Text.assemble((f"{label}: ", "dim"), value))
