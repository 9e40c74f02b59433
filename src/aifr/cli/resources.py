"""``aifr resources add|list|remove``: the registered targets of a findings project (FEAT-004).

Scanner capabilities (``scan.*``) only run against targets registered here, and imported
findings link to the narrowest resource covering their URL or host.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aifr.app import build_app
from aifr.cli.console import console, fail, print_json
from aifr.cli.findings import FolderOption, JsonOption, ProjectIdOption
from aifr.errors import AifrError, ErrorCode, FindingsError
from aifr.findings import Project, ResourceKind
from aifr.findings.resources import new_resource

__all__ = ["app"]

app = typer.Typer(help="Scan targets of a findings project.", no_args_is_help=True)


@app.command("add")
def add(
    value: Annotated[str, typer.Argument(help="Host, http(s) URL, CIDR or repository URL.")],
    project_id: ProjectIdOption,
    kind: Annotated[
        ResourceKind | None, typer.Option(help="host, url, cidr or repository (default: guessed).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="A label.")] = None,
    project: FolderOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Register a scan target (the project is created if it does not exist)."""
    built = None
    try:
        resource = new_resource(project_id, value, kind=kind, name=name)
        built = build_app(project)
        store, registry = built.findings
        store.save_project(Project(id=project_id, name=project_id, created_at=datetime.now(UTC)))
        stored = registry.add_resource(resource)
        built.audit_findings_change(
            "resources.added",
            built.settings.principal,
            {
                "project": project_id,
                "resource_id": stored.id,
                "kind": stored.kind.value,
                "value": stored.value,
            },
        )
    except AifrError as exc:
        fail(exc)
    finally:
        if built is not None:
            built.close()
    if as_json:
        print_json(stored.model_dump(mode="json"))
        return
    again = " (already registered)" if stored.id != resource.id else ""
    console.print(f"resource {stored.id}: {stored.kind.value} {stored.value}{again}")


@app.command("list")
def list_resources(
    project_id: ProjectIdOption, project: FolderOption = Path(), as_json: JsonOption = False
) -> None:
    """List a project's registered targets, oldest first."""
    built = None
    try:
        built = build_app(project)
        _, registry = built.findings
        resources = registry.list_resources(project_id)
    except AifrError as exc:
        fail(exc)
    finally:
        if built is not None:
            built.close()
    if as_json:
        print_json([r.model_dump(mode="json") for r in resources])
        return
    table = Table(title=f"{len(resources)} resources", title_justify="left")
    for column in ("id", "kind", "value", "name"):
        table.add_column(column)
    for r in resources:
        table.add_row(r.id, r.kind.value, r.value, r.name or "-")
    console.print(table)


@app.command("remove")
def remove(
    resource_id: Annotated[str, typer.Argument(help="The resource id (as listed).")],
    project_id: ProjectIdOption,
    project: FolderOption = Path(),
) -> None:
    """Forget a target; findings linked to it keep everything but the link."""
    built = None
    try:
        built = build_app(project)
        _, registry = built.findings
        if not registry.remove_resource(project_id, resource_id):
            raise FindingsError(
                f"resource {resource_id!r} is not registered in project {project_id!r}",
                code=ErrorCode.FINDINGS_NOT_FOUND,
                resource_id=resource_id,
            )
        built.audit_findings_change(
            "resources.removed",
            built.settings.principal,
            {"project": project_id, "resource_id": resource_id},
        )
    except AifrError as exc:
        fail(exc)
    finally:
        if built is not None:
            built.close()
    console.print(f"resource {resource_id} removed")
