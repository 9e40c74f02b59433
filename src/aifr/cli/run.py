"""``aifr run WORKFLOW --input k=v --as PRINCIPAL [--wait] [--plan] [--queue]``: start a run.

The run is driven in a background thread while a Rich live view shows each step's
state. ``--plan`` shows, before anything executes, each step's capability, risk and
policy decision for the principal. ``--queue`` only stores the run, for the ``aifr
worker`` processes sharing the database (on this machine or any other) to take;
``aifr runs show RUN --follow`` watches it. ``--wait`` keeps the command attached
through an approval pause: once someone decides (``aifr approvals approve``, the web
console or the signed callback), the run resumes here. Exit status: 0 completed (or
queued), 4 waiting for an approval, 1 otherwise (compensated, failed, needs review,
compensation failed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from pydantic import JsonValue
from rich.live import Live
from rich.table import Table
from rich.text import Text

from aifr.app import App, build_app
from aifr.cli.call import repeated_input
from aifr.cli.console import console, err_console, error_line, fail, print_json
from aifr.cli.json_input import JsonInputError, loads_strict
from aifr.cli.upstream_runtime import attach_upstreams, detach_upstreams
from aifr.errors import AifrError, FieldError, InputValidationError
from aifr.invocation import ApprovalStatus, new_id
from aifr.workflows import PlannedStep, RunState, RunView, StepState, WorkflowSpec

__all__ = ["parse_inputs", "render_plan", "render_run", "run", "run_exit_status", "watch_run"]

ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="Project folder.")]

STATE_STYLE = {
    "pending": "dim",
    "running": "cyan",
    "waiting_approval": "yellow",
    "compensating": "magenta",
    "compensated": "magenta",
    "completed": "green",
    "failed": "red",
    "compensation_failed": "bold red",
    "needs_review": "bold yellow",
    "cancelled": "dim",
    "not_compensated": "dim",
}
_DECISION_STYLE = {"ALLOW": "green", "DENY": "red", "REQUIRE_APPROVAL": "yellow"}


def parse_inputs(pairs: list[str], spec: WorkflowSpec) -> dict[str, JsonValue]:
    """Turn ``key=value`` pairs into run inputs typed by the workflow's declaration.

    Raises:
        InputValidationError: a pair has no ``=``, names an input twice, or a value does
            not parse as its type.
    """
    values: dict[str, JsonValue] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InputValidationError(
                f"--input {pair!r}: expected key=value",
                errors=[FieldError(path=pair, code="format", message="expected key=value")],
            )
        if key in values:
            raise repeated_input("--input", key, raw)
        declared = spec.inputs.get(key)
        if declared is None or declared.type == "string":
            values[key] = raw
            continue
        try:
            values[key] = loads_strict(raw)
        except JsonInputError as exc:  # the same strict JSON as aifr call's values
            raise InputValidationError(
                f"--input {key}={raw!r}: expected a JSON {declared.type}: {exc}",
                errors=[
                    FieldError(
                        path=key,
                        code="type",
                        message=f"not strict JSON: {exc}",
                        expected=declared.type,
                        received=raw[:200],
                    )
                ],
            ) from None
    return values


def _styled(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, "white"))


def render_run(view: RunView) -> Table:
    """The run as a table: one row per step with its state and what happened."""
    run = view.run
    table = Table(
        title=Text.assemble(
            f"{run.workflow} v{run.workflow_version}  {run.id}  ", _styled(run.state.value)
        ),
        title_justify="left",
    )
    for column in ("#", "step", "capability", "state", "try", "note"):
        table.add_column(column)
    for step in view.steps:
        note = ""
        if step.state is StepState.WAITING_APPROVAL:
            note = f"approval {step.approval_id}"
        elif step.undo_error:
            note = f"undo failed: {step.undo_error.get('message')}"
        elif step.error:
            note = f"{step.error.get('code')}: {str(step.error.get('message'))[:60]}"
        elif step.state is StepState.COMPENSATED and step.undo_capability:
            note = f"undone by {step.undo_capability}"
        elif step.state is StepState.NOT_COMPENSATED:
            note = "nothing to undo"
        table.add_row(
            str(step.index + 1),
            step.step_id,
            step.capability,
            _styled(step.state.value),
            str(step.attempt),
            note[:90],
        )
    return table


def render_plan(spec: WorkflowSpec, planned: list[PlannedStep], principal: str) -> Table:
    """The dry-run table: capability, risk and decision of each step for ``principal``."""
    table = Table(title=f"plan: {spec.name} as {principal}", title_justify="left")
    for column in ("#", "step", "capability", "op", "risk", "decision", "rule", "compensation"):
        table.add_column(column)
    for index, step in enumerate(planned, 1):
        decision = step.decision or "-"
        table.add_row(
            str(index),
            step.step_id,
            step.capability + (f" (v{step.version})" if step.version else ""),
            step.operation or "-",
            step.risk or "-",
            Text(decision, style=_DECISION_STYLE.get(decision, "white")),
            f"{step.rule_id or '-'}" + (f": {step.reason}" if step.reason else ""),
            step.compensation or "-",
        )
    return table


def run_exit_status(view: RunView) -> int:
    """0 completed, 4 waiting for an approval, 1 for every other ending."""
    if view.state is RunState.COMPLETED:
        return 0
    if view.state is RunState.WAITING_APPROVAL:
        return 4
    return 1


def _watch(app: App, run_id: str, work: Callable[[], object], *, live: Live) -> None:
    """Run ``work`` in a thread, refreshing ``live`` from the store until it ends."""
    failure: list[AifrError] = []

    def target() -> None:
        try:
            work()
        except AifrError as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name="aifr-run", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
        if failure:  # refused at once (a finished run): no table before the error
            break
        if app.runs.get(run_id) is not None:
            live.update(render_run(app.workflows.view(run_id)), refresh=True)
    if failure:
        raise failure[0]
    live.update(render_run(app.workflows.view(run_id)), refresh=True)


def watch_run(app: App, run_id: str, work: Callable[[], object], *, quiet: bool) -> RunView:
    """Run ``work`` (which drives ``run_id``) under a live table of the run's steps.

    With ``quiet`` the table goes to stderr and disappears at the end (``--json``).

    Raises:
        AifrError: whatever ``work`` raised.
    """
    with Live(
        console=err_console if quiet else console, transient=quiet, auto_refresh=False
    ) as live:
        _watch(app, run_id, work, live=live)
    return app.workflows.view(run_id)


def _waiting_approval(view: RunView) -> str | None:
    for step in view.steps:
        if step.state is StepState.WAITING_APPROVAL:
            return step.approval_id
    return None


def _wait_for_decision(app: App, view: RunView, timeout_s: float, *, quiet: bool) -> bool:
    approval_id = _waiting_approval(view)
    if approval_id is None:
        return False
    (err_console if quiet else console).print(
        Text.assemble(
            (f"waiting for approval {approval_id}", "yellow"),
            f" (aifr approvals approve {approval_id} --as APPROVER)",
        )
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if app.approvals.get(approval_id).status is not ApprovalStatus.PENDING:
            return True
        time.sleep(0.25)
    return False


def run(
    workflow: Annotated[str, typer.Argument(help="Workflow name or YAML file.")],
    inputs: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="An input as key=value.")
    ] = None,
    principal: Annotated[
        str | None, typer.Option("--as", help="Principal to act as (default: settings.principal).")
    ] = None,
    role: Annotated[
        list[str] | None, typer.Option("--role", help="A role of the principal.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Stay attached through approvals.")] = False,
    wait_timeout: Annotated[
        float, typer.Option("--wait-timeout", help="Seconds to wait for an approval.")
    ] = 3600.0,
    plan: Annotated[
        bool, typer.Option("--plan", help="Show each step's risk and decision; run nothing.")
    ] = False,
    queue: Annotated[
        bool, typer.Option("--queue", help="Queue the run for aifr worker; run nothing here.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
    project: ProjectOption = Path(),
) -> None:
    """Run a workflow: each step governed, every state change durable, failures undone."""
    if queue and (wait or plan):
        other = "--wait" if wait else "--plan"
        raise typer.BadParameter(
            f"--queue leaves the run to aifr worker, so {other} has nothing here to do; "
            "drop one (follow a queued run with aifr runs show RUN --follow)",
            param_hint=f"'{other}'",
        )
    try:
        app = build_app(project)
    except AifrError as exc:
        fail(exc)
    gateway = attach_upstreams(app, command="run")
    try:
        spec = app.workflow(workflow)
        values = parse_inputs(inputs or [], spec)
        who = principal or app.settings.principal
        roles = tuple(role or ())
        if plan:
            planned = app.workflows.plan(spec, values, who, roles=roles)
            if as_json:
                print_json([asdict(p) for p in planned])
            else:
                console.print(render_plan(spec, planned, who))
            return
        if queue:  # validated and audited as workflow.created; a worker starts it
            queued = app.workflows.start(spec, values, who, roles=roles, execute=False)
            _print_queued(queued, as_json=as_json)
            return
        view = _start(
            app, spec, values, who, roles, wait=wait, wait_timeout=wait_timeout, quiet=as_json
        )
    except AifrError as exc:
        fail(exc)
    finally:
        detach_upstreams(gateway)
        app.close()
    if as_json:
        print_json(view.to_dict())
    elif view.state is RunState.WAITING_APPROVAL:
        console.print(
            f"waiting for approval {_waiting_approval(view)}: aifr approvals approve "
            f"{_waiting_approval(view)} --as APPROVER, then aifr runs resume {view.run.id} "
            "(or let aifr worker resume it)"
        )
    elif view.run.error:
        err_console.print(error_line(view.run.error))
    raise typer.Exit(run_exit_status(view))


def _print_queued(view: RunView, *, as_json: bool) -> None:
    """What ``--queue`` answers: the stored run, or its id and how to follow it."""
    if as_json:
        print_json(view.to_dict())
        return
    console.print(
        f"queued {view.run.id} ({view.run.workflow}, {len(view.steps)} steps): aifr worker "
        f"takes it; follow it with aifr runs show {view.run.id} --follow"
    )


def _start(
    app: App,
    spec: WorkflowSpec,
    values: dict[str, JsonValue],
    principal: str,
    roles: tuple[str, ...],
    *,
    wait: bool,
    wait_timeout: float,
    quiet: bool,
) -> RunView:
    engine = app.workflows
    engine.recover(queued=False)  # interrupted runs; the queued ones are the workers'
    run_id = f"run-{new_id()[:20]}"
    with Live(
        console=err_console if quiet else console, transient=quiet, auto_refresh=False
    ) as live:
        _watch(
            app,
            run_id,
            lambda: engine.start(spec, values, principal, roles=roles, run_id=run_id),
            live=live,
        )
        view = engine.view(run_id)
        while wait and view.state is RunState.WAITING_APPROVAL:
            if not _wait_for_decision(app, view, wait_timeout, quiet=quiet):
                break
            _watch(app, run_id, lambda: engine.resume(run_id), live=live)
            view = engine.view(run_id)
        live.refresh()
    return view
