"""``aifr sandbox status``: which process sandbox confines commands here, and its rules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aifr.app import sandbox_report
from aifr.cli.console import console, err_console, fail, print_json
from aifr.config import load_settings
from aifr.errors import AifrError

app = typer.Typer(help="Inspect the process sandbox for commands.", no_args_is_help=True)

ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="Project folder.")]


@app.command("status")
def status(
    project: ProjectOption = Path(),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Show the sandbox backend chosen for `[exec] sandbox`, what is missing, and the rules.

    Exits 1 when the configured backend is unavailable (commands are then refused).
    """
    try:
        report = sandbox_report(load_settings(project))
    except AifrError as exc:
        fail(exc)
    if as_json:
        print_json(report)
    else:
        console.print(f"backend: {report['backend']} (configured: {report['mode']})")
        console.print(f"landlock ABI: {report['landlock_abi']}  seccomp: {report['seccomp']}")
        unavailable = report["unavailable"]
        assert isinstance(unavailable, dict)  # noqa: S101  # built so by sandbox_report
        for name, why in unavailable.items():
            console.print(f"unavailable: {name}: {why}")
        for key in ("write_roots", "read_only", "hidden"):
            shown = report[key]
            assert isinstance(shown, list)  # noqa: S101  # built so by sandbox_report
            console.print(f"{key}: " + ", ".join(str(p) for p in shown))
        if report["warning"]:
            err_console.print(f"warning: {report['warning']}")
    if report["commands_refused"]:
        raise typer.Exit(1)
