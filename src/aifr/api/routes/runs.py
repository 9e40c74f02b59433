"""``/v1/runs``: start, list, show and cancel workflow runs, and prune finished ones.

A run is started by workflow **name** only, from the project's ``workflows.directory``:
never by a file path, so a token cannot make the server load a YAML file of its choosing.
Each step still goes through ``Runtime.invoke`` as the token's principal.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from starlette.responses import JSONResponse

from aifr.api.auth import authorize
from aifr.api.problems import ERROR_RESPONSES
from aifr.api.routes.deps import BEARER, AppDep, CallerDep, workflow_lock
from aifr.app import App
from aifr.errors import ErrorCode, WorkflowError
from aifr.workflows import TERMINAL_STATES, RunState, WorkflowSpec, list_workflows, prune_runs
from aifr.workflows.retention import DAY_S

__all__ = ["PruneRuns", "RunSummary", "StartRun", "router"]

router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=ERROR_RESPONSES, dependencies=BEARER)

RunId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_\-]{1,100}$")]
Lock = Annotated[anyio.CapacityLimiter, Depends(workflow_lock)]


class StartRun(BaseModel):
    """Which workflow to run (by name), its inputs, and whether to queue it for the workers."""

    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$")
    inputs: dict[str, JsonValue] = Field(default_factory=dict)
    queue: bool = Field(
        default=False,
        description="Store the run for `aifr worker` to take and answer 202 at once, "
        "instead of driving it in this request.",
    )


class RunSummary(BaseModel):
    """One run as the list shows it."""

    id: str
    workflow: str
    state: str
    principal: str
    created_at: float
    updated_at: float
    lease_owner: str | None = Field(
        default=None, description="The worker engine holding the run (`host:pid:nonce`)."
    )
    lease_expires_at: float | None = None


class PruneRuns(BaseModel):
    """Which finished runs to delete (``aifr runs prune``)."""

    model_config = ConfigDict(extra="forbid")

    older_than_days: float = Field(ge=0, allow_inf_nan=False)
    states: list[RunState] | None = Field(
        default=None, description="Finished states only; default: all four.", min_length=1
    )
    dry_run: bool = False


def _named(app: App, name: str) -> WorkflowSpec:
    directory = app.settings.path(app.settings.workflows.directory)
    for spec in list_workflows(directory):
        if spec.name == name:
            return spec
    raise WorkflowError(
        f"no workflow named {name!r} in {app.settings.workflows.directory}",
        code=ErrorCode.WORKFLOW_NOT_FOUND,
        workflow=name,
    )


@router.post(
    "",
    response_model=dict[str, Any],
    status_code=201,
    responses={202: {"description": "Queued (`queue: true`): a worker will drive the run."}},
)
async def start_run(
    app: AppDep, who: CallerDep, lock: Lock, start: Annotated[StartRun, Body()]
) -> JSONResponse:
    """Start a run as the token's principal and drive it until it finishes or pauses.

    With ``queue`` the run is only stored (validated, and audited as created) and the
    answer is 202 with the run ``pending``: ``aifr worker`` processes sharing the
    database drive it, and ``GET /v1/runs/{id}`` follows it. A queued run does not wait
    for this server's workflow lock, which serializes the runs it drives itself.
    """
    authorize(app.policy, who, "api.runs.start")
    roles = tuple(sorted(who.roles))

    def go(execute: bool) -> dict[str, JsonValue]:
        spec = _named(app, start.workflow)
        view = app.workflows.start(spec, start.inputs, who.principal, roles=roles, execute=execute)
        return view.to_dict()

    if start.queue:
        queued = await anyio.to_thread.run_sync(go, False)
        location = {"Location": f"/v1/runs/{queued['id']}"}
        return JSONResponse(queued, status_code=202, headers=location)
    return JSONResponse(await anyio.to_thread.run_sync(go, True, limiter=lock), status_code=201)


@router.get("", response_model=list[RunSummary])
async def list_runs(
    app: AppDep,
    who: CallerDep,
    state: Annotated[RunState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[RunSummary]:
    """Runs, newest first."""
    authorize(app.policy, who, "api.runs.read")
    records = await anyio.to_thread.run_sync(lambda: app.workflows.list(state=state, limit=limit))
    return [
        RunSummary(
            id=r.id,
            workflow=r.workflow,
            state=r.state.value,
            principal=r.principal,
            created_at=r.created_at,
            updated_at=r.updated_at,
            lease_owner=r.lease_owner,
            lease_expires_at=r.lease_expires_at,
        )
        for r in records
    ]


@router.post("/prune", response_model=dict[str, Any])
async def prune(app: AppDep, who: CallerDep, rule: Annotated[PruneRuns, Body()]) -> dict[str, Any]:
    """Delete finished runs unchanged for ``older_than_days``, as the token's principal.

    Their audit records stay; each batch deleted is recorded as ``workflow.runs_pruned``.
    A state a run can still leave is refused (409, ``workflow.bad_state``).
    """
    authorize(app.policy, who, "api.runs.prune")
    report = await anyio.to_thread.run_sync(
        lambda: prune_runs(
            app.runs,
            older_than_s=rule.older_than_days * DAY_S,
            actor=who.principal,
            states=frozenset(rule.states) if rule.states else TERMINAL_STATES,
            dry_run=rule.dry_run,
        )
    )
    return report.to_dict()


@router.get("/{run_id}", response_model=dict[str, Any])
async def show_run(run_id: RunId, app: AppDep, who: CallerDep) -> dict[str, JsonValue]:
    """A run with its steps, states, errors and timings."""
    authorize(app.policy, who, "api.runs.read")
    return await anyio.to_thread.run_sync(lambda: app.workflows.view(run_id).to_dict())


@router.post("/{run_id}/cancel", response_model=dict[str, Any])
async def cancel_run(
    run_id: RunId, app: AppDep, who: CallerDep, lock: Lock
) -> dict[str, JsonValue]:
    """Cancel a run and compensate its completed steps, as the token's principal."""
    authorize(app.policy, who, "api.runs.cancel")
    return await anyio.to_thread.run_sync(
        lambda: app.workflows.cancel(run_id, operator=who.principal).to_dict(), limiter=lock
    )
