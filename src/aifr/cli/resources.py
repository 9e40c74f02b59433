"""``aifr resources add|list|remove``: the registered targets of a findings project (FEAT-004).

Scanner capabilities (``scan.*``) only run against targets registered here, and imported
findings link to the narrowest resource covering their URL or host. Each command runs
its capability (``resources.add``, ``resources.list``, ``resources.remove``) through the
governed runtime, so it is policy-checked and audited; ``resources.remove`` is a DELETE,
HIGH, which the default policy sends to a human.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

import typer
from pydantic import JsonValue
from rich.table import Table

from aifr.app import build_app
from aifr.cli.call import exit_status, print_result
from aifr.cli.console import console, fail, print_json
from aifr.cli.findings import FolderOption, JsonOption, ProjectIdOption
from aifr.errors import AifrError
from aifr.findings import ResourceKind
from aifr.invocation.result import Result

__all__ = ["app"]

app = typer.Typer(help="Scan targets of a findings project.", no_args_is_help=True)

PrincipalOption = Annotated[
    str | None, typer.Option("--as", help="Principal to act as (default: settings.principal).")
]


def _invoke(
    project: Path, capability_id: str, inputs: dict[str, JsonValue], principal: str | None
) -> Result:
    built = None
    try:
        built = build_app(project)
        return built.runtime.invoke(
            capability_id, inputs, built.settings.principal if principal is None else principal
        )
    except AifrError as exc:
        fail(exc)
    finally:
        if built is not None:
            built.close()


def _done(result: Result, *, as_json: bool) -> Any:
    """The output of an OK result; otherwise print the result and exit with its status."""
    if not result.ok:
        print_result(result, as_json=as_json)
        raise typer.Exit(exit_status(result))
    return result.output


@app.command("add")
def add(
    value: Annotated[str, typer.Argument(help="Host, http(s) URL, CIDR or repository URL.")],
    project_id: ProjectIdOption,
    kind: Annotated[
        ResourceKind | None, typer.Option(help="host, url, cidr or repository (default: guessed).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="A label.")] = None,
    principal: PrincipalOption = None,
    project: FolderOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Register a scan target (the project is created if it does not exist)."""
    inputs: dict[str, JsonValue] = {"project": project_id, "value": value}
    if kind is not None:
        inputs["kind"] = kind.value
    if name is not None:
        inputs["name"] = name
    stored = cast(
        dict[str, Any],
        _done(_invoke(project, "resources.add", inputs, principal), as_json=as_json),
    )
    if as_json:
        print_json({k: v for k, v in stored.items() if k != "added"})
        return
    again = "" if stored["added"] else " (already registered)"
    console.print(f"resource {stored['id']}: {stored['kind']} {stored['value']}{again}")


@app.command("list")
def list_resources(
    project_id: ProjectIdOption,
    principal: PrincipalOption = None,
    project: FolderOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """List a project's registered targets, oldest first."""
    resources = cast(
        list[dict[str, Any]],
        _done(
            _invoke(project, "resources.list", {"project": project_id}, principal),
            as_json=as_json,
        ),
    )
    if as_json:
        print_json(resources)
        return
    table = Table(title=f"{len(resources)} resources", title_justify="left")
    for column in ("id", "kind", "value", "name"):
        table.add_column(column)
    for r in resources:
        table.add_row(r["id"], r["kind"], r["value"], r["name"] or "-")
    console.print(table)


@app.command("remove")
def remove(
    resource_id: Annotated[str, typer.Argument(help="The resource id (as listed).")],
    project_id: ProjectIdOption,
    principal: PrincipalOption = None,
    project: FolderOption = Path(),
) -> None:
    """Forget a target; findings linked to it keep everything but the link."""
    _done(
        _invoke(
            project,
            "resources.remove",
            {"project": project_id, "resource_id": resource_id},
            principal,
        ),
        as_json=False,
    )
    console.print(f"resource {resource_id} removed")
