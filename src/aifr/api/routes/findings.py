"""``/v1/findings``: list, show, triage, import and export a project's security findings.

Reads and triage go through ``Runtime.invoke`` as the token's principal (the
``findings.list``, ``findings.show`` and ``findings.triage`` capabilities): the policy
decides, a triage needing an approval answers 202, and the ledger records each call
with its author. An import is the ``findings.import`` capability too: the request body
is kept as an upload (``.aifr/uploads/``, owner-only, under a random id) that the
capability reads in place of a path, then removed, so an HTTP import is the same
governed, audited call as ``aifr findings import``. An export streams a whole file,
which a capability's JSON output does not carry: it is authorized by the route
operation ``api.findings.export``.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from typing import Annotated, Any, Literal, cast

import anyio
from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from starlette.responses import Response, StreamingResponse

from aifr.api.auth import authorize
from aifr.api.problems import ERROR_RESPONSES
from aifr.api.routes.deps import BEARER, AppDep, CallerDep
from aifr.api.routes.governed import governed_call
from aifr.app import App
from aifr.errors import ErrorCode, FindingsError
from aifr.findings.exporters import export_findings
from aifr.findings.models import Finding, TriageState
from aifr.findings.ports import FindingFilter, StoragePort
from aifr.findings.severity import Severity
from aifr.stdlib.findings import new_upload, upload_path

__all__ = ["TriageRequest", "router"]

router = APIRouter(
    prefix="/v1/findings", tags=["findings"], responses=ERROR_RESPONSES, dependencies=BEARER
)

ProjectId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.\-]{1,200}$")]
FindingId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:\-]{1,200}$")]
SeverityName = Literal["critical", "high", "medium", "low", "info", "unknown"]
TriageName = Literal["open", "accepted", "false_positive", "fixed"]
ExportFormat = Literal["json", "jsonl", "csv", "sarif"]
Scanner = Annotated[str | None, Query(max_length=100)]
RunFilter = Annotated[str | None, Query(max_length=200)]
_MEDIA = {
    "json": "application/json",
    "jsonl": "application/x-ndjson",
    "csv": "text/csv",
    "sarif": "application/sarif+json",
}


class TriageRequest(BaseModel):
    """The new triage state of a finding, and why."""

    model_config = ConfigDict(extra="forbid")

    state: TriageName
    reason: str = Field(default="", max_length=2000)


@router.get("/{project}", response_model=dict[str, Any])
async def list_findings(
    project: ProjectId,
    app: AppDep,
    who: CallerDep,
    severity: Annotated[list[SeverityName] | None, Query()] = None,
    scanner: Scanner = None,
    triage_state: Annotated[TriageName | None, Query()] = None,
    run: RunFilter = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    """A page of the project's findings, oldest first (``findings.list``; ``next_cursor``)."""
    optional: dict[str, JsonValue] = {
        "severity": cast(JsonValue, severity),
        "scanner": scanner,
        "triage_state": triage_state,
        "run": run,
        "cursor": cursor,
    }
    inputs: dict[str, JsonValue] = {"project": project, "limit": limit}
    inputs |= {key: value for key, value in optional.items() if value}
    return await governed_call(app, who, "findings.list", inputs)


@router.get("/{project}/export", response_class=StreamingResponse)
async def export(
    project: ProjectId,
    app: AppDep,
    who: CallerDep,
    export_format: Annotated[ExportFormat, Query(alias="format")] = "json",
    severity: Annotated[list[SeverityName] | None, Query()] = None,
    scanner: Scanner = None,
    triage_state: Annotated[TriageName | None, Query()] = None,
    run: RunFilter = None,
) -> StreamingResponse:
    """The project's findings as JSON, JSON Lines, CSV or SARIF 2.1.0 (``api.findings.export``)."""
    authorize(app.policy, who, "api.findings.export")
    where = FindingFilter(
        project_id=project,
        run_id=run,
        severities=tuple(Severity(s) for s in severity or ()),
        scanner=scanner,
        triage_state=TriageState(triage_state) if triage_state else None,
    )
    spool = await anyio.to_thread.run_sync(lambda: _export(app, export_format, where))

    def chunks() -> Iterator[bytes]:
        with spool:
            while block := spool.read(65536):
                yield block

    return StreamingResponse(chunks(), media_type=_MEDIA[export_format])


def _all(store: StoragePort, where: FindingFilter) -> Iterator[Finding]:
    cursor: str | None = None
    while True:
        page = store.list_findings(where, limit=1000, cursor=cursor)
        yield from page.findings
        if (cursor := page.next_cursor) is None:
            return


def _export(app: App, export_format: str, where: FindingFilter) -> Any:
    store, _ = app.findings
    if store.get_project(where.project_id) is None:
        raise FindingsError(
            f"project {where.project_id!r} has no findings (no import made it)",
            code=ErrorCode.FINDINGS_NOT_FOUND,
            project_id=where.project_id,
        )
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115  # closed by the stream
    text = io.TextIOWrapper(spool, encoding="utf-8", errors="replace", newline="")
    export_findings(export_format, _all(store, where), text)
    text.flush()
    text.detach()
    spool.seek(0)
    return spool


@router.post("/{project}/import", response_model=dict[str, Any], status_code=201)
async def import_file(
    project: ProjectId,
    request: Request,
    app: AppDep,
    who: CallerDep,
    scanner: Annotated[
        Literal["auto", "nuclei", "feroxbuster", "katana"], Query(description="auto reads it")
    ] = "auto",
    run: RunFilter = None,
    body: Annotated[
        bytes,
        Body(media_type="application/octet-stream", description="the scanner's output file"),
    ] = b"",
) -> Response:
    """Import a scanner's output (the request body) into the project (``findings.import``).

    201 with the import's summary. The body is limited by ``[api] max_body_bytes``;
    larger files go through ``aifr findings import``.
    """
    raw = body or await request.body()
    uploads = app.settings.state_path / "uploads"
    upload = await anyio.to_thread.run_sync(new_upload, uploads, raw)
    inputs: dict[str, JsonValue] = {"project": project, "upload": upload, "scanner": scanner}
    if run is not None:
        inputs["run"] = run
    try:
        answer = await governed_call(app, who, "findings.import", inputs)
    finally:
        upload_path(uploads, upload).unlink(missing_ok=True)
    if answer.status_code == 200:
        answer.status_code = 201
    return answer


@router.get("/{project}/{finding_id}", response_model=dict[str, Any])
async def show_finding(
    project: ProjectId, finding_id: FindingId, app: AppDep, who: CallerDep
) -> Response:
    """One finding with its triage history (``findings.show``)."""
    return await governed_call(
        app, who, "findings.show", {"project": project, "finding_id": finding_id}
    )


@router.post(
    "/{project}/{finding_id}/triage",
    response_model=dict[str, Any],
    responses={202: {"description": "an approval is pending; its id is in the result"}},
)
async def triage(
    project: ProjectId,
    finding_id: FindingId,
    app: AppDep,
    who: CallerDep,
    change: Annotated[TriageRequest, Body()],
) -> Response:
    """Set a finding's triage state as the token's principal (``findings.triage``)."""
    return await governed_call(
        app,
        who,
        "findings.triage",
        {
            "project": project,
            "finding_id": finding_id,
            "state": change.state,
            "reason": change.reason,
        },
    )
