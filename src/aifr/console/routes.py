"""``/console``: sign in with a token, decide approvals, follow runs, audit and findings.

Server-rendered Jinja2 pages; forms post back and redirect (no script needed). Every
action goes through the same objects as the API: decisions are made as the signed-in
principal (authenticated, with the token's roles), reads are authorized by the policy
engine's ``api.*`` operations, and refusals are shown in the page with their code.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, FastAPI, Form, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from aifr.api.auth import Caller, authorize
from aifr.api.routes.approvals import approval_view
from aifr.app import App
from aifr.audit import load_or_create_signing_key, public_key_hex
from aifr.console.sessions import COOKIE, Session, SessionStore
from aifr.errors import AifrError, ErrorCode, TransportError
from aifr.findings.models import TriageState
from aifr.findings.ports import FindingFilter
from aifr.findings.severity import Severity
from aifr.invocation import ApprovalStatus, CallOptions, TokenRecord
from aifr.workflows import RunState
from aifr.workflows.presence import known_workers

__all__ = ["CONSOLE_PREFIX", "install_console"]

CONSOLE_PREFIX = "/console"
_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=select_autoescape(["html"]),
)


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "-"


_TEMPLATES.filters["when"] = _when


def _page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_TEMPLATES.get_template(name).render(**context), status_code=status)


def _caller(session: Session) -> Caller:
    return Caller(session.principal, session.roles, None, session.digest)


class _Console:
    """The console's handlers over one project and its sessions."""

    def __init__(self, app: App, workflow_lock: anyio.CapacityLimiter) -> None:
        self.app = app
        self.sessions = SessionStore(app.tokens)
        self.workflow_lock = workflow_lock

    def session_of(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    @staticmethod
    def sign_in_first() -> RedirectResponse:
        return RedirectResponse(f"{CONSOLE_PREFIX}/sign-in", status_code=303)

    @staticmethod
    def refused(session: Session, error: AifrError) -> HTMLResponse:
        status = 404 if error.code is ErrorCode.APPROVAL_NOT_FOUND else 403
        return _page("error.html", status, session=session, error=error)

    def allowed(self, session: Session, operation: str) -> HTMLResponse | None:
        """``None`` when the policy allows ``operation``, else the refusal page."""
        try:
            authorize(self.app.policy, _caller(session), operation)
        except AifrError as exc:
            return self.refused(session, exc)
        return None

    async def home(self) -> Response:
        return RedirectResponse(f"{CONSOLE_PREFIX}/approvals", status_code=303)

    async def sign_in_page(self) -> Response:
        return _page("sign_in.html", session=None, problem=None)

    async def sign_in(self, request: Request, token: Annotated[str, Form()] = "") -> Response:
        checked = await anyio.to_thread.run_sync(lambda: self.app.tokens.check(token))
        if not isinstance(checked, TokenRecord):
            problem = f"that token is {checked.reason}"
            return _page("sign_in.html", 401, session=None, problem=problem)
        session = self.sessions.open(checked)
        response = RedirectResponse(f"{CONSOLE_PREFIX}/approvals", status_code=303)
        response.set_cookie(
            COOKIE,
            session.id,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=CONSOLE_PREFIX,
            max_age=int(self.sessions.ttl_s),
        )
        return response

    async def sign_out(self, request: Request, csrf: Annotated[str, Form()] = "") -> Response:
        session = self.session_of(request)
        if session is not None and self.sessions.csrf_ok(session, csrf):
            self.sessions.close(session.id)
        response = self.sign_in_first()
        response.delete_cookie(COOKIE, path=CONSOLE_PREFIX)
        return response

    async def inbox(self, request: Request, notice: str = "") -> Response:
        session = self.session_of(request)
        if session is None:
            return self.sign_in_first()
        if (refusal := self.allowed(session, "api.approvals.read")) is not None:
            return refusal
        records = await anyio.to_thread.run_sync(
            lambda: self.app.approvals.list(status=ApprovalStatus.PENDING)
        )
        views = [approval_view(r) for r in records]
        return _page("approvals.html", session=session, approvals=views, notice=notice[:200])

    async def pending_ids(self, request: Request) -> Response:
        """The pending approvals' ids (the inbox polls it to refresh itself)."""
        session = self.session_of(request)
        if session is None:
            return JSONResponse({"ids": []}, status_code=401)
        if self.allowed(session, "api.approvals.read") is not None:
            return JSONResponse({"ids": []}, status_code=403)
        records = await anyio.to_thread.run_sync(
            lambda: self.app.approvals.list(status=ApprovalStatus.PENDING)
        )
        return JSONResponse({"ids": sorted(r.id for r in records)})

    def bad_form(self, session: Session, csrf: str) -> HTMLResponse | None:
        """``None`` when the form's CSRF token is the session's, else the refusal page."""
        if self.sessions.csrf_ok(session, csrf):
            return None
        error = TransportError(
            "the form's CSRF token is missing or wrong: reload the page and try again",
            code=ErrorCode.TRANSPORT_FORBIDDEN,
        )
        return _page("error.html", 403, session=session, error=error)

    async def decide(
        self, request: Request, approval_id: str, csrf: str, comment: str, *, yes: bool
    ) -> Response:
        session = self.session_of(request)
        if session is None:
            return self.sign_in_first()
        if (refusal := self.bad_form(session, csrf)) is not None:
            return refusal
        approvals = self.app.approvals
        try:
            if yes:
                record = await approvals.aapprove(
                    approval_id,
                    session.principal,
                    comment=comment,
                    roles=session.roles,
                    authenticated=True,
                )
            else:
                record = await approvals.areject(
                    approval_id,
                    session.principal,
                    reason=comment,
                    roles=session.roles,
                    authenticated=True,
                )
        except AifrError as exc:
            return self.refused(session, exc)
        notice = f"{record.id}: {record.status.value}"
        return RedirectResponse(f"{CONSOLE_PREFIX}/approvals?notice={notice}", status_code=303)

    async def approve(
        self,
        request: Request,
        approval_id: str,
        csrf: Annotated[str, Form()] = "",
        comment: Annotated[str, Form(max_length=2000)] = "",
    ) -> Response:
        return await self.decide(request, approval_id, csrf, comment, yes=True)

    async def reject(
        self,
        request: Request,
        approval_id: str,
        csrf: Annotated[str, Form()] = "",
        comment: Annotated[str, Form(max_length=2000)] = "",
    ) -> Response:
        return await self.decide(request, approval_id, csrf, comment, yes=False)

    async def runs(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None:
            return self.sign_in_first()
        if (refusal := self.allowed(session, "api.runs.read")) is not None:
            return refusal
        records = await anyio.to_thread.run_sync(lambda: self.app.workflows.list(limit=100))
        ttl_s = self.app.settings.workflows.lease_ttl_s
        workers = await anyio.to_thread.run_sync(lambda: known_workers(self.app.workers, ttl_s))
        return _page("runs.html", session=session, runs=records, workers=workers)

    def _run_page(self, run_id: str) -> dict[str, Any]:
        """A run's steps with timings, compensations and, for a review, what drifted."""
        view = self.app.workflows.view(run_id)
        run = view.run
        registry = self.app.runtime.registry
        steps = []
        for step in view.steps:
            recorded = run.fingerprints.get(step.step_id)
            found = registry.get(step.capability)
            current = found.fingerprint if found is not None else None
            steps.append(
                {
                    "record": step,
                    "elapsed_s": (step.finished_at - run.created_at)
                    if step.finished_at is not None
                    else None,
                    "compensated": step.undo_capability is not None,
                    "recorded_fingerprint": recorded,
                    "current_fingerprint": current,
                    "drifted": bool(recorded and current and recorded != current),
                }
            )
        return {
            "run": run,
            "steps": steps,
            "duration_s": run.updated_at - run.created_at,
            "needs_review": run.state is RunState.NEEDS_REVIEW,
        }

    async def run_detail(self, request: Request, run_id: str, notice: str = "") -> Response:
        session = self.session_of(request)
        if session is None:
            return self.sign_in_first()
        if (refusal := self.allowed(session, "api.runs.read")) is not None:
            return refusal
        try:
            page = await anyio.to_thread.run_sync(lambda: self._run_page(run_id))
        except AifrError as exc:
            return self.refused(session, exc)
        return _page("run.html", session=session, notice=notice[:200], **page)

    async def accept_drift(
        self, request: Request, run_id: str, csrf: Annotated[str, Form()] = ""
    ) -> Response:
        """Accept a reviewed run's changed capabilities and resume it, as the signed-in operator."""
        session = self.session_of(request)
        if session is None:
            return self.sign_in_first()
        if (refusal := self.bad_form(session, csrf)) is not None:
            return refusal
        if (refusal := self.allowed(session, "api.runs.resume")) is not None:
            return refusal
        try:
            view = await anyio.to_thread.run_sync(
                lambda: self.app.workflows.resume(run_id, operator=session.principal),
                limiter=self.workflow_lock,
            )
        except AifrError as exc:
            return self.refused(session, exc)
        notice = f"reviewed by {session.principal}: {view.state.value}"
        return RedirectResponse(f"{CONSOLE_PREFIX}/runs/{run_id}?notice={notice}", status_code=303)

    def _audit_view(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        settings = self.app.settings
        key_path = settings.path(settings.audit.signing_key_file)
        trusted = (
            public_key_hex(load_or_create_signing_key(key_path)) if key_path.exists() else None
        )
        report = self.app.ledger.verify(trusted_key=trusted).to_dict()
        checkpoints = self.app.ledger.checkpoints()
        latest = max(checkpoints, key=lambda c: c.seq) if checkpoints else None
        report["checkpoint"] = (
            {
                "seq": latest.seq,
                "hash": latest.hash,
                "ts": latest.ts,
                "public_key": latest.public_key,
                "signature": latest.signature,
                "trusted": trusted is not None and latest.public_key == trusted,
            }
            if latest is not None
            else None
        )
        report["checkpoints"] = len(checkpoints)
        records = [r.to_dict() for r in self.app.ledger.records(limit=50, newest_first=True)]
        return report, records

    async def audit(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None:
            return self.sign_in_first()
        if (refusal := self.allowed(session, "api.audit.read")) is not None:
            return refusal
        report, records = await anyio.to_thread.run_sync(self._audit_view)
        return _page("audit.html", session=session, report=report, records=records)

    def _findings_page(self, query: dict[str, str]) -> dict[str, Any]:
        store, _ = self.app.findings
        projects = sorted(p.id for p in store.list_projects())
        project = query.get("project") or (projects[0] if projects else "")
        severity = query.get("severity", "")
        state = query.get("state", "")
        where = FindingFilter(
            project_id=project,
            severities=(Severity(severity),) if severity in set(Severity) else (),
            scanner=query.get("scanner") or None,
            triage_state=TriageState(state) if state in set(TriageState) else None,
        )
        page = (
            store.list_findings(where, limit=200, cursor=query.get("cursor") or None)
            if project
            else None
        )
        return {
            "projects": projects,
            "project": project,
            "findings": page.findings if page is not None else [],
            "next_cursor": page.next_cursor if page is not None else None,
            "filters": {"severity": severity, "scanner": query.get("scanner", ""), "state": state},
            "severities": [s.value for s in Severity],
            "states": [t.value for t in TriageState],
        }

    async def findings(self, request: Request, notice: str = "") -> Response:
        """The findings table of one project, filtered by severity, scanner and triage state."""
        session = self.session_of(request)
        if session is None:
            return self.sign_in_first()
        if (refusal := self.allowed(session, "api.findings.read")) is not None:
            return refusal
        query = {k: v[:200] for k, v in request.query_params.items()}
        try:
            page = await anyio.to_thread.run_sync(lambda: self._findings_page(query))
        except AifrError as exc:
            return self.refused(session, exc)
        return _page("findings.html", session=session, notice=notice[:200], **page)

    async def triage(
        self,
        request: Request,
        project: str,
        finding_id: str,
        csrf: Annotated[str, Form()] = "",
        state: Annotated[str, Form(max_length=40)] = "",
        reason: Annotated[str, Form(max_length=2000)] = "",
    ) -> Response:
        """Set a finding's triage state through ``Runtime.invoke`` (``findings.triage``)."""
        session = self.session_of(request)
        if session is None:
            return self.sign_in_first()
        if (refusal := self.bad_form(session, csrf)) is not None:
            return refusal
        result = await self.app.runtime.ainvoke(
            "findings.triage",
            {"project": project, "finding_id": finding_id, "state": state, "reason": reason},
            session.principal,
            CallOptions(roles=session.roles),
        )
        if result.error is not None and result.error_code is not ErrorCode.APPROVAL_REQUIRED:
            return self.refused(session, result.error)
        notice = (
            f"{finding_id}: {state}"
            if result.error is None
            else f"{finding_id}: approval {result.approval_id} pending"
        )
        return RedirectResponse(
            f"{CONSOLE_PREFIX}/findings?project={project}&notice={notice}", status_code=303
        )


def install_console(api: FastAPI) -> None:
    """Add the console's routes to the API application (``create_api(extend=...)``)."""
    console = _Console(api.state.aifr, api.state.workflow_limiter)
    router = APIRouter(prefix=CONSOLE_PREFIX, include_in_schema=False)
    for path, method, handler in (
        ("", "GET", console.home),
        ("/sign-in", "GET", console.sign_in_page),
        ("/sign-in", "POST", console.sign_in),
        ("/sign-out", "POST", console.sign_out),
        ("/approvals", "GET", console.inbox),
        ("/approvals/pending.json", "GET", console.pending_ids),
        ("/approvals/{approval_id}/approve", "POST", console.approve),
        ("/approvals/{approval_id}/reject", "POST", console.reject),
        ("/runs", "GET", console.runs),
        ("/runs/{run_id}", "GET", console.run_detail),
        ("/runs/{run_id}/accept-drift", "POST", console.accept_drift),
        ("/audit", "GET", console.audit),
        ("/findings", "GET", console.findings),
        ("/findings/{project}/{finding_id}/triage", "POST", console.triage),
    ):
        kind = JSONResponse if path.endswith(".json") else HTMLResponse
        router.add_api_route(path, handler, methods=[method], response_class=kind)
    api.include_router(router)
