"""``aifr approvals list|show|approve|reject|execute``: the human side of approvals."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import JsonValue
from rich.table import Table
from rich.text import Text

from aifr.app import App, build_app
from aifr.audit import redact_details
from aifr.cli.call import exit_status, print_result
from aifr.cli.console import console, fail, print_json
from aifr.errors import AifrError, ApprovalError, ErrorCode
from aifr.invocation import ApprovalRecord, ApprovalStatus, TokenRecord, missing_for

__all__ = ["app"]

app = typer.Typer(help="List, decide and execute approval requests.", no_args_is_help=True)

T = TypeVar("T")

ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="Project folder.")]
IdArgument = Annotated[str, typer.Argument(help="Approval id (ap-...).")]
AsOption = Annotated[
    str | None,
    typer.Option("--as", help="Who decides (the approver); implied by --token."),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="AIFR_TOKEN",
        help="The approver's token (aifr tokens create): proves who decides.",
        show_envvar=True,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]

_STATUS_STYLE = {
    "pending": "yellow",
    "approved": "green",
    "rejected": "red",
    "expired": "dim",
    "consumed": "cyan",
    "withdrawn": "dim",
}


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "-"


def _as_dict(record: ApprovalRecord) -> dict[str, JsonValue]:
    return {
        "id": record.id,
        "status": record.status.value,
        "capability_id": record.capability_id,
        "capability_version": record.capability_version,
        "fingerprint": record.fingerprint,
        "principal": record.principal,
        "roles": list(record.roles),
        "inputs": dict(redact_details(record.inputs)),
        "request_digest": record.request_digest,
        "risk": record.risk,
        "rule_id": record.rule_id,
        "reason": record.reason,
        "approver_roles": list(record.approver_roles),
        "quorum": record.quorum,
        "quorum_roles": dict(record.quorum_roles),
        "missing_votes": dict[str, JsonValue](
            missing_for(record) if record.status is ApprovalStatus.PENDING else {}
        ),
        "votes": [{"approver": v.approver, "at": v.at, "comment": v.comment} for v in record.votes],
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "decided_by": record.decided_by,
        "decided_at": record.decided_at,
        "decision_comment": record.decision_comment,
        "consumed_at": record.consumed_at,
        "result": record.result,
    }


def _with_app(project: Path, work: Callable[[App], T]) -> T:
    """Run ``work`` on the project's app; an ``AifrError`` is printed with its exit code."""
    try:
        aifr_app = build_app(project)
    except AifrError as exc:
        fail(exc)
    try:
        return work(aifr_app)
    except AifrError as exc:
        fail(exc)
    finally:
        aifr_app.close()


def _decider(app: App, named: str | None, token: str | None) -> tuple[str, frozenset[str], bool]:
    """Who decides: the token's principal (proven), else the ``--as`` name (asserted).

    Raises:
        ApprovalError: ``approval.unauthenticated`` for an unusable token, or one whose
            principal is not the ``--as`` name; ``approval.invalid`` with neither.
    """
    if token:
        checked = app.tokens.check(token)
        if not isinstance(checked, TokenRecord):
            raise ApprovalError(
                f"the token given is {checked.reason}; mint one with 'aifr tokens create'",
                code=ErrorCode.APPROVAL_UNAUTHENTICATED,
                reason=checked.reason,
            )
        if named is not None and named != checked.principal:
            raise ApprovalError(
                f"--as {named} does not match the token, which is {checked.principal}'s",
                code=ErrorCode.APPROVAL_UNAUTHENTICATED,
            )
        return checked.principal, frozenset(checked.roles), True
    if named is None:
        raise ApprovalError(
            "say who decides: --token TOKEN (or AIFR_TOKEN), or --as NAME",
            code=ErrorCode.APPROVAL_INVALID,
        )
    return named, frozenset(), False


@app.command("list")
def list_approvals(
    status: Annotated[
        ApprovalStatus | None, typer.Option(help="Only requests in this state.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    as_json: JsonOption = False,
    project: ProjectOption = Path(),
) -> None:
    """List approval requests, newest first."""
    records = _with_app(project, lambda a: a.approvals.list(status=status, limit=limit))
    if as_json:
        print_json([_as_dict(r) for r in records])
        return
    table = Table(title=f"{len(records)} approval requests", title_justify="left")
    for column in ("id", "status", "capability", "principal", "risk", "rule", "votes", "expires"):
        table.add_column(column)
    for r in records:
        style = _STATUS_STYLE[r.status.value]
        table.add_row(
            r.id,
            Text(r.status.value, style=style),
            f"{r.capability_id}@{r.capability_version}",
            r.principal,
            r.risk,
            r.rule_id or "-",
            f"{len(r.votes)}/{r.quorum}",
            _when(r.expires_at),
        )
    console.print(table)


@app.command("show")
def show(
    approval_id: IdArgument, as_json: JsonOption = False, project: ProjectOption = Path()
) -> None:
    """Show one request: what was asked, by whom, why, and what was decided."""
    record = _with_app(project, lambda a: a.approvals.get(approval_id))
    if as_json:
        print_json(_as_dict(record))
        return
    style = _STATUS_STYLE[record.status.value]
    console.print(Text.assemble((record.id, "bold"), "  ", (record.status.value, style)))
    console.print(
        f"{record.principal} asks to run {record.capability_id}@{record.capability_version} "
        f"(risk {record.risk})"
    )
    console.print(f"rule: {record.rule_id or '-'}  reason: {record.reason or '-'}")
    console.print(
        f"approvers: roles {', '.join(record.approver_roles) or 'any allowed by policy'}, "
        f"quorum {record.quorum}"
    )
    if record.quorum_roles:
        needs = ", ".join(f"{count} {role}" for role, count in record.quorum_roles)
        console.print(f"separation of duties: {needs} (distinct approvers)")
    if record.status is ApprovalStatus.PENDING and (missing := missing_for(record)):
        still = ", ".join(f"{n} {'any approver' if r == '*' else r}" for r, n in missing.items())
        console.print(f"still needs: {still}")
    for vote in record.votes:
        console.print(f"  approved by {vote.approver} at {_when(vote.at)} {vote.comment}")
    if record.decided_by and record.status in (ApprovalStatus.REJECTED, ApprovalStatus.WITHDRAWN):
        console.print(
            f"{record.status.value} by {record.decided_by}: {record.decision_comment or '-'}"
        )
    console.print(f"created {_when(record.created_at)}, expires {_when(record.expires_at)}")
    console.print("inputs:")
    console.print_json(data=dict(redact_details(record.inputs)))
    if record.result is not None:
        audit_id = record.result.get("audit_id")
        where = f" (audit record {audit_id})" if audit_id is not None else ""
        console.print(f"executed: {record.result.get('status')}{where}")


@app.command("approve")
def approve(
    approval_id: IdArgument,
    approver: AsOption = None,
    token: TokenOption = None,
    comment: Annotated[str, typer.Option(help="A note kept with the approval.")] = "",
    project: ProjectOption = Path(),
) -> None:
    """Approve a pending request (nobody approves their own)."""

    def decide(a: App) -> ApprovalRecord:
        who, roles, proven = _decider(a, approver, token)
        return a.approvals.approve(
            approval_id, who, comment=comment, roles=roles, authenticated=proven
        )

    record = _with_app(project, decide)
    if record.status is ApprovalStatus.APPROVED and record.workflow_id is not None:
        console.print(  # the run executes it: 'approvals execute' is not the next step
            Text.assemble(
                ("approved", "green"),
                f" {record.id}; the run of workflow {record.workflow_id} waiting on it "
                "resumes with 'aifr worker' or 'aifr runs resume RUN'",
            )
        )
    elif record.status is ApprovalStatus.APPROVED:
        console.print(
            Text.assemble(
                ("approved", "green"),
                f" {record.id}; run it once with 'aifr approvals execute {record.id}'",
            )
        )
    else:
        console.print(
            f"vote recorded for {record.id}: {len(record.votes)}/{record.quorum} approvals"
        )


@app.command("reject")
def reject(
    approval_id: IdArgument,
    approver: AsOption = None,
    token: TokenOption = None,
    reason: Annotated[str, typer.Option(help="Why the request is refused.")] = "",
    project: ProjectOption = Path(),
) -> None:
    """Reject a pending request."""

    def decide(a: App) -> ApprovalRecord:
        who, roles, proven = _decider(a, approver, token)
        return a.approvals.reject(
            approval_id, who, reason=reason, roles=roles, authenticated=proven
        )

    record = _with_app(project, decide)
    console.print(Text.assemble(("rejected", "red"), f" {record.id}"))


@app.command("execute")
def execute(
    approval_id: IdArgument, as_json: JsonOption = False, project: ProjectOption = Path()
) -> None:
    """Run an approved request, exactly once, as the principal who asked for it."""
    result = _with_app(project, lambda a: a.runtime.execute_approved(approval_id))
    print_result(result, as_json=as_json)
    raise typer.Exit(exit_status(result))
