"""``aifr tokens create|list|revoke``: the bearer tokens of every HTTP surface.

One set serves ``aifr serve`` (the REST API and console) and ``aifr mcp --transport
http``; ``aifr mcp token ...`` is the same group under its older name. Tokens live in
the state database as SHA-256 digests (see ``docs/security.md``).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from aifr.cli.console import console, err_console, fail, print_json
from aifr.errors import AifrError
from aifr.invocation import TokenRecord, TokenService

__all__ = ["app"]

app = typer.Typer(
    help="Bearer tokens for 'aifr serve' and 'aifr mcp --transport http'.", no_args_is_help=True
)

ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="Project folder.")]


def _when(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _audit(project: Path, action: str, record: TokenRecord) -> None:
    """Append a ``config.changed`` record for a minted or revoked token (never the token).

    Raises:
        AifrError: the ledger could not be written.
    """
    from aifr.app import build_audit_ledger
    from aifr.audit import AuditEvent
    from aifr.config import load_settings

    settings = load_settings(project, require_project=True)
    ledger = build_audit_ledger(settings)
    try:
        ledger.append(
            AuditEvent(
                kind="config.changed",
                principal=settings.principal,
                outcome="ok",
                details={
                    "key": "tokens",
                    "action": action,
                    "digest_prefix": record.digest[:12],
                    "acts_as": record.principal,
                    "roles": list(record.roles),
                    "operator": record.operator,
                    "label": record.label,
                    "expires_at": _when(record.expires_at),
                },
            )
        )
    finally:
        ledger.close()


def _service(project: Path) -> TokenService:
    from aifr.app import build_token_service
    from aifr.config import load_settings

    return build_token_service(load_settings(project, require_project=True))


@app.command("create")
def create(
    principal: Annotated[str, typer.Option(help="Principal the token acts as.")],
    role: Annotated[list[str] | None, typer.Option(help="Role (repeatable).")] = None,
    operator: Annotated[
        str | None, typer.Option(help="Human whose approval prompts this client answers.")
    ] = None,
    label: Annotated[str, typer.Option(help="Free-text note.")] = "",
    ttl_s: Annotated[
        float | None,
        typer.Option("--ttl-s", help="Lifetime in seconds (default: until revoked)."),
    ] = None,
    project: ProjectOption = Path(),
) -> None:
    """Mint a bearer token; it is printed once and stored only as a SHA-256 digest.

    The change is audited as ``config.changed`` (digest prefix, never the token).
    """
    try:
        token, record = _service(project).create(
            principal, roles=role or (), operator=operator, label=label, ttl_s=ttl_s
        )
        _audit(project, "created", record)
    except AifrError as exc:
        fail(exc)
    expiry = f", expires {_when(record.expires_at)}" if record.expires_at is not None else ""
    err_console.print(
        Text.assemble(
            "token for ",
            (record.principal, "bold"),
            f" (digest {record.digest[:12]}{expiry}); shown once, store it now:",
        )
    )
    sys.stdout.write(token + "\n")


@app.command("list")
def list_tokens(
    project: ProjectOption = Path(),
    show_revoked: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List tokens (digest prefix, principal, roles, operator, expiry, label)."""
    try:
        records = _service(project).records(include_revoked=show_revoked)
    except AifrError as exc:
        fail(exc)
    if as_json:
        print_json(
            [
                {
                    "digest": record.digest[:12],
                    "principal": record.principal,
                    "roles": list(record.roles),
                    "operator": record.operator,
                    "label": record.label,
                    "created_at": _when(record.created_at),
                    "expires_at": _when(record.expires_at),
                    "revoked_at": _when(record.revoked_at),
                }
                for record in records
            ]
        )
        return
    for record in records:
        state = f"revoked {_when(record.revoked_at)}" if record.revoked_at else ""
        expiry = f"expires {_when(record.expires_at)}" if record.expires_at else "no expiry"
        console.print(
            f"{record.digest[:12]}  {record.principal}  roles={','.join(record.roles) or '-'}  "
            f"operator={record.operator or '-'}  {state or expiry}  {record.label}"
        )
    if not records:
        console.print("no tokens")


@app.command("revoke")
def revoke(
    digest: Annotated[str, typer.Argument(help="Digest prefix shown by 'tokens list'.")],
    project: ProjectOption = Path(),
) -> None:
    """Revoke a token by its digest prefix; it stops working on the next request (audited)."""
    try:
        removed = _service(project).revoke(digest)
        _audit(project, "revoked", removed)
    except AifrError as exc:
        fail(exc)
    console.print(f"revoked {removed.digest[:12]} ({removed.principal})")
