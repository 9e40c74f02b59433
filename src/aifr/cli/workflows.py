"""``aifr workflows check|schema``: validate workflow files before anything runs them.

``check`` loads every file in ``workflows.directory`` (or the files named), reports
each invalid one with its file and field, and flags steps whose capability is not
registered, which would otherwise only fail when the run reaches them. ``schema``
prints the JSON Schema of the format (also shipped as
``src/aifr/workflows/workflow.schema.json``) for editors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from aifr.app import build_app
from aifr.capabilities import CapabilityRegistry
from aifr.cli.console import console, err_console, fail, print_json
from aifr.errors import AifrError, ErrorCode, exit_code_for
from aifr.workflows import (
    WorkflowSpec,
    load_workflow_file,
    unregistered_capabilities,
    workflow_json_schema,
)

__all__ = ["app"]

app = typer.Typer(help="Check workflow definitions and print their schema.", no_args_is_help=True)

ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="Project folder.")]


@dataclass(frozen=True, slots=True)
class _Checked:
    """One workflow file: its definition when it loads, and what is wrong with it."""

    path: Path
    spec: WorkflowSpec | None
    problems: list[str]


def _check_file(path: Path, registry: CapabilityRegistry) -> _Checked:
    try:
        spec = load_workflow_file(path)
    except AifrError as exc:
        return _Checked(path, None, [f"{exc.code.value}: {exc.message}"])
    unknown = [f"{path}: {problem}" for problem in unregistered_capabilities(registry, spec)]
    return _Checked(path, spec, unknown)


def _files(directory: Path, named: list[Path]) -> list[Path]:
    if named:
        return named
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


@app.command("check")
def check(
    files: Annotated[
        list[Path] | None, typer.Argument(help="Workflow files (default: every file).")
    ] = None,
    project: ProjectOption = Path(),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate workflow files: schema, templates, and that every capability exists."""
    try:
        aifr_app = build_app(project)
    except AifrError as exc:
        fail(exc)
    try:
        directory = aifr_app.settings.path(aifr_app.settings.workflows.directory)
        checked = [_check_file(p, aifr_app.registry) for p in _files(directory, files or [])]
    except AifrError as exc:
        fail(exc)
    finally:
        aifr_app.close()
    problems = [problem for item in checked for problem in item.problems]
    if as_json:
        print_json(
            [
                {
                    "file": str(item.path),
                    "workflow": item.spec.name if item.spec is not None else None,
                    "version": item.spec.version if item.spec is not None else None,
                    "steps": len(item.spec.steps) if item.spec is not None else None,
                    "valid": not item.problems,
                    "problems": item.problems,
                }
                for item in checked
            ]
        )
        if problems:
            raise typer.Exit(exit_code_for(ErrorCode.WORKFLOW_INVALID))
        return
    table = Table(title=f"{len(checked)} workflow files", title_justify="left")
    for column in ("file", "workflow", "steps", "status"):
        table.add_column(column)
    for item in checked:
        spec = item.spec
        table.add_row(
            str(item.path),
            f"{spec.name} v{spec.version}" if spec is not None else "-",
            str(len(spec.steps)) if spec is not None else "-",
            Text("invalid", style="red") if item.problems else Text("ok", style="green"),
        )
    console.print(table)
    for problem in problems:
        err_console.print(problem, soft_wrap=True)
    if problems:
        raise typer.Exit(exit_code_for(ErrorCode.WORKFLOW_INVALID))


@app.command("schema")
def schema() -> None:
    """Print the JSON Schema of workflow files (for editors)."""
    print_json(workflow_json_schema())
