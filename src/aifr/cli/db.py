"""``aifr db status|upgrade|copy``: schema versions, migrations, and moving the state."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aifr.app import build_app
from aifr.cli.console import console, fail, print_json
from aifr.cli.db_copy import StateCopy, copy_project_state
from aifr.errors import AifrError, ErrorCode, StorageError
from aifr.redaction import redact_url
from aifr.storage.schema import ComponentSchema, schema_status, upgrade_schema

app = typer.Typer(
    help="The state database: schema versions, upgrades, and copying it to another database.",
    no_args_is_help=True,
)

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


@app.command("copy")
def copy(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="The database to copy into (postgresql://... or sqlite:///PATH); it must "
            "hold no state.",
        ),
    ],
    operator: Annotated[
        str | None, typer.Option("--as", help="Who copies (recorded in both audit chains).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be copied; write nothing.")
    ] = False,
    project: ProjectOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Copy the project's whole state into another, empty database (then use that one).

    The audit chain, runs, approvals, grants, tokens and findings are all copied. Stop
    every worker and server using the project first. The audit chain is copied
    record for record and verified on the target.
    """
    try:
        built = build_app(project)
        try:
            done = copy_project_state(
                built, to, actor=operator or built.settings.principal, dry_run=dry_run
            )
        finally:
            built.close()
    except AifrError as exc:
        fail(exc)
    if as_json:
        print_json(done.to_dict())
        return
    _show_copy(done)


def _show_copy(done: StateCopy) -> None:
    verb = "would copy" if done.report is None else "copied"
    table = Table(title=f"{verb} {done.source} -> {done.target}", title_justify="left")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in done.rows.items():
        table.add_row(name, str(rows))
    console.print(table)
    if done.report is None:
        console.print("the target holds no state; run again without --dry-run to copy")
        return
    report = done.report
    console.print(
        f"{report.total} rows; audit chain up to seq {report.head_seq} copied and verified "
        f"({done.verified} records, with the db.copied record on both sides); "
        f"{report.released_leases} run lease(s) released for the new database's workers"
    )
    console.print(
        f'next: set database_url = "{done.target}" in aifr.toml (or AIFR_DATABASE_URL) '
        "and start the workers"
    )
