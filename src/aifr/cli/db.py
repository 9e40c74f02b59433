"""``aifr db status|upgrade``: the state database's schema versions, and applying migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aifr.app import build_app
from aifr.cli.console import console, fail, print_json
from aifr.errors import AifrError, ErrorCode, StorageError
from aifr.redaction import redact_url
from aifr.storage.schema import ComponentSchema, schema_status, upgrade_schema

app = typer.Typer(help="The state database's schema: versions and upgrades.", no_args_is_help=True)

ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="Project folder.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print as JSON.")]


def _show(rows: list[ComponentSchema], url: str, as_json: bool) -> None:
    if as_json:
        print_json([row.to_dict() for row in rows])
        return
    table = Table(title=f"schema of {url}", title_justify="left")
    for column in ("component", "version", "latest", "status"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.component, str(row.current), str(row.latest), row.status)
    console.print(table)


def _newer(rows: list[ComponentSchema]) -> StorageError | None:
    newer = [row.component for row in rows if row.status == "newer"]
    if not newer:
        return None
    return StorageError(
        f"the database holds a newer schema than this aifr knows ({', '.join(newer)}); "
        "upgrade aifr before using this database",
        code=ErrorCode.STORAGE_SCHEMA_MISMATCH,
    )


@app.command("status")
def status(project: ProjectOption = Path(), as_json: JsonOption = False) -> None:
    """Show each component's schema version against the newest this aifr knows."""
    try:
        built = build_app(project)
        try:
            rows = schema_status(built.database)
        finally:
            built.close()
    except AifrError as exc:
        fail(exc)
    _show(rows, redact_url(built.settings.database_url), as_json)
    refused = _newer(rows)
    if refused is not None:
        fail(refused)


@app.command("upgrade")
def upgrade(project: ProjectOption = Path(), as_json: JsonOption = False) -> None:
    """Apply every pending migration (safe to run again; several processes may run it)."""
    try:
        built = build_app(project)
        try:
            rows = upgrade_schema(built.database)
        finally:
            built.close()
    except AifrError as exc:
        fail(exc)
    _show(rows, redact_url(built.settings.database_url), as_json)
