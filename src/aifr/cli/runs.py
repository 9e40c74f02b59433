"""``aifr runs list|show|cancel|resume|retry-compensation|prune``: operate on workflow runs.

``cancel``, ``resume`` and ``retry-compensation`` drive the run here, under the same
live table of step states as ``aifr run``; ``show --follow`` keeps that table live while
another process (``aifr worker``, an ``aifr run`` elsewhere) drives the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text

from aifr.app import App, build_app
from aifr.cli.console import console, err_console, error_line, fail, print_json
from aifr.cli.run import STATE_STYLE, render_run, run_exit_status, watch_run
from aifr.errors import AifrError
from aifr.workflows import ACTIVE_STATES, TERMINAL_STATES, RunRecord, RunState, RunView, prune_runs
from aifr.workflows.retention import DAY_S

__all__ = ["app"]

app = typer.Typer(help="List, inspect and operate on workflow runs.", no_args_is_help=True)

ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="Project folder.")]
RunArgument = Annotated[str, typer.Argument(help="Run id (run-...).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _open(project: Path) -> App:
    try:
        return build_app(project)
    except AifrError as exc:
        fail(exc)


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _show(view: RunView, as_json: bool, *, table: bool = True) -> None:
    if as_json:
        print_json(view.to_dict())
        return
    if table:
        console.print(render_run(view))
    run = view.run
    console.print(f"principal: {run.principal}  started: {_when(run.created_at)}")
    if run.error:
        where = f" at step {run.failed_step}" if run.failed_step else ""
        err_console.print(error_line(run.error, where))
    if run.state is RunState.COMPENSATION_FAILED:
        console.print(f"fix the cause, then: aifr runs retry-compensation {run.id} --as OPERATOR")
    elif run.state is RunState.NEEDS_REVIEW:
        console.print(f"review the change, then: aifr runs resume {run.id} --as OPERATOR")


def _act(project: Path, run_id: str, action: Callable[[App], RunView], as_json: bool) -> None:
    """Drive ``run_id`` with ``action`` under the live table (the table stays on screen)."""
    aifr_app = _open(project)
    try:
        aifr_app.workflows.view(run_id)  # an unknown run fails before the live view opens
        view = watch_run(aifr_app, run_id, lambda: action(aifr_app), quiet=as_json)
    except AifrError as exc:
        fail(exc)
    finally:
        aifr_app.close()
    _show(view, as_json, table=False)
    raise typer.Exit(run_exit_status(view))


def _follow(aifr_app: App, run_id: str, poll_s: float, *, quiet: bool) -> RunView:
    """Refresh the run's table until no worker is driving it any more."""
    view = aifr_app.workflows.view(run_id)
    with Live(
        render_run(view),
        console=err_console if quiet else console,
        transient=quiet,
        auto_refresh=False,
    ) as live:
        while view.state in ACTIVE_STATES:
            time.sleep(poll_s)
            view = aifr_app.workflows.view(run_id)
            live.update(render_run(view), refresh=True)
    return view


def _holder(run: RunRecord) -> str:
    """The worker holding the run's lease (``-`` when none; ``(expired)`` once it lapsed)."""
    if run.lease_owner is None:
        return "-"
    expired = run.lease_expires_at is not None and run.lease_expires_at < time.time()
    return f"{run.lease_owner} (expired)" if expired else run.lease_owner


@app.command("list")
def list_runs(
    state: Annotated[RunState | None, typer.Option(help="Only runs in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    as_json: JsonOption = False,
    project: ProjectOption = Path(),
) -> None:
    """List workflow runs, newest first."""
    aifr_app = _open(project)
    try:
        runs = aifr_app.workflows.list(state=state, limit=limit)
    except AifrError as exc:
        fail(exc)
    finally:
        aifr_app.close()
    if as_json:
        print_json(
            [
                {
                    "id": r.id,
                    "workflow": r.workflow,
                    "state": r.state.value,
                    "principal": r.principal,
                    "failed_step": r.failed_step,
                    "created_at": r.created_at,
                    "updated_at": r.updated_at,
                    "lease_owner": r.lease_owner,
                    "lease_expires_at": r.lease_expires_at,
                }
                for r in runs
            ]
        )
        return
    table = Table(title=f"{len(runs)} workflow runs", title_justify="left")
    table.add_column("id", no_wrap=True)
    for column in ("workflow", "state", "principal", "failed step", "updated", "worker"):
        table.add_column(column)
    for r in runs:
        style = STATE_STYLE.get(r.state.value, "white")
        table.add_row(
            r.id, f"{r.workflow} v{r.workflow_version}", Text(r.state.value, style=style),
            r.principal, r.failed_step or "-", _when(r.updated_at), _holder(r),
        )  # fmt: skip
    console.print(table)


@app.command("show")
def show(
    run_id: RunArgument,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Keep a live view until the run finishes or waits."),
    ] = False,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between refreshes.")] = 0.25,
    as_json: JsonOption = False,
    project: ProjectOption = Path(),
) -> None:
    """Show a run: each step's state, attempts, errors and compensation."""
    aifr_app = _open(project)
    try:
        if follow:
            view = _follow(aifr_app, run_id, poll, quiet=as_json)
        else:
            view = aifr_app.workflows.view(run_id)
    except AifrError as exc:
        fail(exc)
    finally:
        aifr_app.close()
    _show(view, as_json, table=not follow)


OperatorOption = Annotated[str | None, typer.Option("--as", help="Who acts (the operator).")]


@app.command("cancel")
def cancel(
    run_id: RunArgument,
    operator: OperatorOption = None,
    as_json: JsonOption = False,
    project: ProjectOption = Path(),
) -> None:
    """Cancel a run: completed steps are compensated, then it ends cancelled."""
    _act(
        project,
        run_id,
        lambda a: a.workflows.cancel(run_id, operator=operator or a.settings.principal),
        as_json,
    )


@app.command("resume")
def resume(
    run_id: RunArgument,
    operator: OperatorOption = None,
    as_json: JsonOption = False,
    project: ProjectOption = Path(),
) -> None:
    """Resume a run: after an approval decision, a crash, or a reviewed capability change."""
    _act(project, run_id, lambda a: a.workflows.resume(run_id, operator=operator), as_json)


@app.command("retry-compensation")
def retry_compensation(
    run_id: RunArgument,
    operator: OperatorOption = None,
    as_json: JsonOption = False,
    project: ProjectOption = Path(),
) -> None:
    """Try a failed compensation again, from the step where it failed."""
    _act(
        project,
        run_id,
        lambda a: a.workflows.retry_compensation(run_id, operator=operator or a.settings.principal),
        as_json,
    )


@app.command("prune")
def prune(
    older_than_days: Annotated[
        float,
        typer.Option(
            "--older-than-days",
            min=0,
            help="Delete finished runs unchanged for this many days (0: every finished run).",
        ),
    ],
    states: Annotated[
        list[RunState] | None,
        typer.Option(
            "--state",
            help="Only runs in this finished state (repeatable; default: completed, "
            "compensated, failed and cancelled).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the runs that would go; delete nothing.")
    ] = False,
    operator: OperatorOption = None,
    as_json: JsonOption = False,
    project: ProjectOption = Path(),
) -> None:
    """Delete finished runs and their steps (audit records stay; each batch is recorded)."""
    aifr_app = _open(project)
    try:
        report = prune_runs(
            aifr_app.runs,
            older_than_s=older_than_days * DAY_S,
            actor=operator or aifr_app.settings.principal,
            states=frozenset(states) if states else TERMINAL_STATES,
            dry_run=dry_run,
        )
    except AifrError as exc:
        fail(exc)
    finally:
        aifr_app.close()
    if as_json:
        print_json(report.to_dict())
        return
    named = ", ".join(state.value for state in report.states)
    verb = "would prune" if report.dry_run else "pruned"
    console.print(
        f"{verb} {report.runs} run(s) ({named}) unchanged since {_when(report.finished_before)}"
    )
