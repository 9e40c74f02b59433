"""``aifr grants list|issue|revoke``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aifr.app import build_app
from aifr.capabilities import RiskLevel
from aifr.cli.console import console, fail, print_json
from aifr.cli.policy import parse_input
from aifr.errors import AifrError, ConfigError
from aifr.policy import Grant, GrantStore, PolicyEngine

app = typer.Typer(help="Time-limited grants that stand in for approvals.", no_args_is_help=True)

ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="Project folder.")]


def _engine(project: Path) -> tuple[PolicyEngine, GrantStore]:
    engine = build_app(project).policy
    if engine.grants is None:
        raise ConfigError("grants need the SQLite state database (database_url = sqlite:///...)")
    return engine, engine.grants


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _status(grant: Grant, now: float) -> str:
    if grant.revoked_at is not None:
        return f"revoked by {grant.revoked_by}"
    return "active" if grant.is_active(now) else "expired"


@app.command("list")
def list_grants(
    project: ProjectOption = Path(),
    principal: Annotated[str | None, typer.Option(help="Only this principal's.")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Include expired and revoked.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List grants (active ones unless --all)."""
    now = datetime.now(UTC).timestamp()
    try:
        _, store = _engine(project)
        grants = store.list(principal=principal, active_at=None if show_all else now)
    except AifrError as exc:
        fail(exc)
    if as_json:
        print_json([g.to_dict() for g in grants])
        return
    table = Table(title=f"{len(grants)} grants", title_justify="left")
    for column in (
        "id",
        "principal",
        "capability",
        "constraints",
        "issued by",
        "expires",
        "status",
    ):
        table.add_column(column)
    for g in grants:
        constraints = ", ".join(f"{k}={v}" for k, v in g.constraints.items()) or "-"
        table.add_row(
            g.id,
            g.principal,
            g.capability,
            constraints,
            g.issued_by,
            _when(g.expires_at),
            _status(g, now),
        )
    console.print(table)


@app.command("issue")
def issue(
    approver: Annotated[str, typer.Option("--as", help="The approver issuing the grant.")],
    principal: Annotated[str, typer.Option(help="Who receives the grant.")],
    capability: Annotated[str, typer.Option(help="Capability id or glob.")],
    ttl_s: Annotated[float, typer.Option("--ttl-s", help="Lifetime in seconds.")] = 3600.0,
    risk: Annotated[RiskLevel, typer.Option(help="Risk level the approver must cover.")] = (
        RiskLevel.HIGH
    ),
    input_: Annotated[
        list[str] | None, typer.Option("--input", help="Input must equal KEY=VALUE (repeatable).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why.")] = "",
    project: ProjectOption = Path(),
) -> None:
    """Issue a grant that turns REQUIRE_APPROVAL into ALLOW for matching requests."""
    try:
        engine, _ = _engine(project)
        grant = engine.issue_grant(
            approver=approver,
            principal=principal,
            capability=capability,
            risk=risk,
            ttl_s=ttl_s,
            constraints=dict(parse_input(item) for item in input_ or ()),
            reason=reason,
        )
    except AifrError as exc:
        fail(exc)
    console.print(f"grant {grant.id} issued to {principal} until {_when(grant.expires_at)}")


@app.command("revoke")
def revoke(
    grant_id: Annotated[str, typer.Argument(help="The grant id.")],
    revoked_by: Annotated[str, typer.Option("--as", help="Who revokes it.")],
    project: ProjectOption = Path(),
) -> None:
    """Revoke a grant at once."""
    try:
        engine, _ = _engine(project)
        grant = engine.revoke_grant(grant_id, revoked_by=revoked_by)
    except AifrError as exc:
        fail(exc)
    console.print(f"grant {grant.id} revoked by {grant.revoked_by} at {_when(grant.revoked_at)}")
