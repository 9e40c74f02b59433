"""``aifr findings import|list|show|triage|export|migrate``: scanner findings of a project.

``--project`` names the findings project (a body of security work, created by its first
import); the project *folder* is ``-p``/``--project-dir`` here, as ``-p`` is everywhere.
Triage goes through the governed runtime (``findings.triage``): policy-checked and
audited with the principal who made the change.
"""

from __future__ import annotations

import io
import os
import queue
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TextIO, cast

import typer
from pydantic import JsonValue
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from aifr.app import App, build_app, open_findings_stores
from aifr.cli.call import exit_status, print_result
from aifr.cli.console import console, err_console, fail, print_json
from aifr.errors import AifrError, ErrorCode, FindingsError
from aifr.findings import Finding, Severity, TriageState
from aifr.findings.exporters import EXPORT_FORMATS, export_findings
from aifr.findings.importer import IMPORT_PROGRESS
from aifr.findings.ports import FindingFilter, StoragePort
from aifr.stdlib.findings import finding_json
from aifr.storage.sqlite import SqliteDatabase

__all__ = ["app"]

app = typer.Typer(help="Scanner findings: import, list, triage, export.", no_args_is_help=True)

FolderOption = Annotated[
    Path, typer.Option("--project-dir", "-p", help="Project folder (holds aifr.toml).")
]
ProjectIdOption = Annotated[str, typer.Option("--project", help="Findings project id.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print as JSON.")]
_BAR_FROM_BYTES = 1024 * 1024
_SKIPPED_SHOWN = 20


def _print_summary(summary: dict[str, Any]) -> None:
    console.print(
        f"imported {summary['imported']} new findings into project {summary['project']}, "
        f"run {summary['run']} (scanner {summary['scanner'] or 'none detected'})"
    )
    console.print(
        f"duplicates: {summary['duplicates']}  "
        f"linked to resources: {summary['linked_to_resources']}"
    )
    console.print(f"skipped: {summary['skipped']}")
    for skipped in summary["skipped_lines"][:_SKIPPED_SHOWN]:
        kind = "malformed" if skipped["malformed"] else "not a finding"
        console.print(f"  line {skipped['line']} ({kind}): {skipped['reason']}")
    if summary["skipped"] > _SKIPPED_SHOWN:
        console.print(f"  ... {summary['skipped'] - _SKIPPED_SHOWN} more (--json lists them)")


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(help="Scanner output (JSON Lines, array or object).")],
    project_id: ProjectIdOption,
    scanner: Annotated[
        str, typer.Option(help="auto, nuclei, feroxbuster or katana (auto reads the content).")
    ] = "auto",
    run: Annotated[str | None, typer.Option("--run", help="Run id (default: a new one).")] = None,
    principal: Annotated[
        str | None, typer.Option("--as", help="Principal to act as (default: settings.principal).")
    ] = None,
    project: FolderOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Import a scanner's output file into a findings project (streamed, deduplicated).

    Runs ``findings.import`` through the governed runtime (policy, audit): the file must
    be inside the project's ``[fs] roots``.
    """
    built: App | None = None
    path = os.path.abspath(file)
    try:
        built = build_app(project)
        size = file.stat().st_size if file.is_file() else 0
        show_bar = size >= _BAR_FROM_BYTES and err_console.is_terminal and not as_json
        inputs: dict[str, JsonValue] = {"project": project_id, "path": path, "scanner": scanner}
        if run is not None:
            inputs["run"] = run
        with Progress(
            TextColumn("importing"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            disable=not show_bar,
        ) as progress:
            task = progress.add_task("import", total=size)
            watching = IMPORT_PROGRESS.set(
                lambda done, total: progress.update(task, completed=done, total=total)
            )
            try:
                result = built.runtime.invoke(
                    "findings.import",
                    inputs,
                    built.settings.principal if principal is None else principal,
                )
            finally:
                IMPORT_PROGRESS.reset(watching)
    except AifrError as exc:
        fail(exc)
    finally:
        if built is not None:
            built.close()
    if as_json and result.ok:
        print_json(result.output)
        return
    if not result.ok:
        print_result(result, as_json=as_json)
        if result.error is not None and result.error.details.get("rule") == "path_outside_root":
            err_console.print(
                "hint: findings import reads files inside the project's [fs] roots; add the "
                "file's folder to [fs] roots in aifr.toml, or copy the file into the project"
            )
        raise typer.Exit(exit_status(result))
    _print_summary(cast(dict[str, Any], result.output))


def _filter(
    project_id: str,
    run: str | None,
    severity: list[Severity] | None,
    scanner: str | None,
    state: TriageState | None,
    resource: str | None,
) -> FindingFilter:
    return FindingFilter(
        project_id=project_id,
        run_id=run,
        severities=tuple(severity or ()),
        scanner=scanner,
        triage_state=state,
        resource_id=resource,
    )


@app.command("list")
def list_findings(
    project_id: ProjectIdOption,
    severity: Annotated[
        list[Severity] | None, typer.Option(help="Only this severity (repeatable).")
    ] = None,
    scanner: Annotated[str | None, typer.Option(help="Only this scanner's.")] = None,
    state: Annotated[TriageState | None, typer.Option(help="Only this triage state.")] = None,
    run: Annotated[str | None, typer.Option(help="Only findings this run reported.")] = None,
    resource: Annotated[str | None, typer.Option(help="Only findings of this resource id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Findings per page.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Continue after a previous page.")] = None,
    project: FolderOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """List a project's findings, oldest first, one page at a time."""
    built = None
    try:
        built = build_app(project)
        store, _ = built.findings
        page = store.list_findings(
            _filter(project_id, run, severity, scanner, state, resource), limit=limit, cursor=cursor
        )
    except AifrError as exc:
        fail(exc)
    finally:
        if built is not None:
            built.close()
    if as_json:
        print_json(
            {"findings": [finding_json(f) for f in page.findings], "next_cursor": page.next_cursor}
        )
        return
    table = Table(title=f"{len(page.findings)} findings", title_justify="left")
    table.add_column("id", overflow="fold", no_wrap=False)
    for column in ("severity", "scanner", "title", "location", "state", "seen"):
        table.add_column(column)
    for f in page.findings:
        table.add_row(
            f.id,
            f.severity.value,
            f.scanner,
            f.title,
            f.url or f.matched_at or f.host or "-",
            f.triage_state.value,
            str(f.occurrences),
        )
    console.print(table)
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}")


@app.command("show")
def show(
    finding_id: Annotated[str, typer.Argument(help="The finding id (as listed).")],
    project_id: ProjectIdOption,
    project: FolderOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Show one finding with its triage history."""
    built = None
    try:
        built = build_app(project)
        store, _ = built.findings
        finding = store.get_finding(project_id, finding_id)
        if finding is None:
            raise FindingsError(
                f"finding {finding_id!r} is not in project {project_id!r}",
                code=ErrorCode.FINDINGS_NOT_FOUND,
                finding_id=finding_id,
            )
        history = store.list_triage_history(project_id, finding_id)
    except AifrError as exc:
        fail(exc)
    finally:
        if built is not None:
            built.close()
    changes = [
        {
            "at": c.at.isoformat(),
            "actor": c.actor,
            "from_state": c.from_state.value,
            "to_state": c.to_state.value,
            "reason": c.reason,
        }
        for c in history
    ]
    if as_json:
        print_json({**finding_json(finding), "triage_history": changes})
        return
    console.print(Text.assemble((finding.severity.value.upper(), "bold"), " ", finding.title))
    for label, value in (
        ("id", finding.id),
        ("rule", finding.rule_id),
        ("scanner", f"{finding.scanner} ({finding.scanner_generation})"),
        ("location", finding.url or finding.matched_at or finding.host or "-"),
        ("state", finding.triage_state.value),
        ("first seen", f"{finding.first_seen.isoformat()} (run {finding.run_id})"),
        ("last seen", f"{finding.last_seen.isoformat()} (run {finding.last_run_id})"),
        ("occurrences", str(finding.occurrences)),
        ("resource", finding.resource_id or "-"),
        ("fingerprint", finding.fingerprint),
    ):
        console.print(f"{label}: {value}")
    if finding.description:
        console.print(finding.description)
    for c in changes:
        console.print(f"triage {c['at']} {c['actor']}: {c['from_state']} -> {c['to_state']}")


@app.command("triage")
def triage(
    finding_id: Annotated[str, typer.Argument(help="The finding id (as listed).")],
    state: Annotated[TriageState, typer.Argument(help="open, accepted, false_positive, fixed.")],
    project_id: ProjectIdOption,
    reason: Annotated[str, typer.Option(help="Why (kept in the history).")] = "",
    principal: Annotated[
        str | None, typer.Option("--as", help="Principal to act as (default: settings.principal).")
    ] = None,
    project: FolderOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Set a finding's triage state through the governed runtime (policy, audit)."""
    built = None
    try:
        built = build_app(project)
        result = built.runtime.invoke(
            "findings.triage",
            {
                "project": project_id,
                "finding_id": finding_id,
                "state": state.value,
                "reason": reason,
            },
            built.settings.principal if principal is None else principal,
        )
    except AifrError as exc:
        fail(exc)
    finally:
        if built is not None:
            built.close()
    print_result(result, as_json=as_json)
    raise typer.Exit(exit_status(result))


@app.command("migrate")
def migrate(project: FolderOption = Path()) -> None:
    """Upgrade a findings store an older aifr wrote to this version's schema."""
    try:
        built = build_app(project)
        try:
            database = built.database
            store, _ = open_findings_stores(
                built.settings,
                database if isinstance(database, SqliteDatabase) else None,
                migrate=True,
            )
            version = store.get_schema_version()
        finally:
            built.close()
    except AifrError as exc:
        fail(exc)
    console.print(f"findings store at schema version {version}")


def _all_findings(store: StoragePort, where: FindingFilter) -> Iterator[Finding]:
    cursor: str | None = None
    while True:
        page = store.list_findings(where, limit=1000, cursor=cursor)
        yield from page.findings
        cursor = page.next_cursor
        if cursor is None:
            return


class _QueueText(io.TextIOBase):
    """A text stream whose writes become byte chunks on a bounded queue."""

    def __init__(self, chunks: queue.Queue[bytes | BaseException | None]) -> None:
        self._chunks = chunks

    def write(self, text: str) -> int:
        self._chunks.put(text.encode("utf-8", "replace"))  # a lone surrogate becomes "?"
        return len(text)


def _export_chunks(export_format: str, findings: Iterator[Finding]) -> Iterator[bytes]:
    """The exporter's output as byte chunks, produced in a thread (memory stays bounded)."""
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=256)

    def produce() -> None:
        try:
            export_findings(export_format, findings, cast(TextIO, _QueueText(chunks)))
            chunks.put(None)
        except BaseException as exc:  # handed to the consumer, which raises it  # noqa: BLE001
            chunks.put(exc)

    threading.Thread(target=produce, name="aifr-export", daemon=True).start()
    while (item := chunks.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item


@app.command("export")
def export(
    project_id: ProjectIdOption,
    export_format: Annotated[
        str, typer.Option("--format", help=f"One of {', '.join(EXPORT_FORMATS)}.")
    ] = "json",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write (atomically); default stdout."),
    ] = None,
    severity: Annotated[
        list[Severity] | None, typer.Option(help="Only this severity (repeatable).")
    ] = None,
    scanner: Annotated[str | None, typer.Option(help="Only this scanner's.")] = None,
    state: Annotated[TriageState | None, typer.Option(help="Only this triage state.")] = None,
    run: Annotated[str | None, typer.Option(help="Only findings this run reported.")] = None,
    project: FolderOption = Path(),
) -> None:
    """Export a project's findings as JSON, JSON Lines, CSV or SARIF 2.1.0."""
    built = None
    try:
        if export_format not in EXPORT_FORMATS:
            raise FindingsError(
                f"unknown export format {export_format!r}: choose {', '.join(EXPORT_FORMATS)}",
                code=ErrorCode.FINDINGS_UNKNOWN_FORMAT,
            )
        built = build_app(project)
        store, _ = built.findings
        where = _filter(project_id, run, severity, scanner, state, None)
        if store.get_project(project_id) is None:
            raise FindingsError(
                f"project {project_id!r} has no findings (no import made it)",
                code=ErrorCode.FINDINGS_NOT_FOUND,
                project_id=project_id,
            )
        chunks = _export_chunks(export_format, _all_findings(store, where))
        if output is None:
            for chunk in chunks:
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        else:
            written = store.atomic_write(output, chunks)
    except AifrError as exc:
        fail(exc)
    finally:
        if built is not None:
            built.close()
    if output is not None:
        err_console.print(f"wrote {written} bytes to {output}")
