"""The ``aifr`` command: one Typer app, one module per command group."""

from __future__ import annotations

from typing import Any

import typer
import typer.core

from aifr.cli import (
    approvals,
    audit,
    call,
    capabilities,
    db,
    demo,
    doctor,
    findings,
    grants,
    ingest,
    mcp,
    plugins,
    policy,
    project,
    resources,
    run,
    runs,
    sandbox,
    search,
    serve,
    status,
    tokens,
    upstreams,
    worker,
    workers,
    workflows,
)

__all__ = ["app", "main"]

_option_type = typer.core.TyperOption.display_type_rich


def _flag_type(self: typer.core.TyperOption, ctx: Any) -> str | None:  # Typer's own click
    """No value type for a plain flag: Typer's help showed ``--help <bool>``, a flag takes none."""
    if self.is_flag and not self.count:
        return None
    return _option_type(self, ctx)


typer.core.TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]  # Typer's help

app = typer.Typer(
    name="aifr",
    help="aifr, the AI-First Runtime: governed, audited, durable actions for AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Help is written as plain prose with ``code``: markdown reflows it and shows
    # brackets as written, where Rich markup took "[/STREAM]" for a tag and crashed.
    rich_markup_mode="markdown",
)
app.command("init")(project.init)
app.command("demo")(demo.demo)
app.add_typer(capabilities.app, name="capabilities")
app.add_typer(policy.app, name="policy")
app.add_typer(grants.app, name="grants")
app.command("call")(call.call)
app.add_typer(approvals.app, name="approvals")
app.add_typer(audit.app, name="audit")
app.add_typer(mcp.app, name="mcp")
app.add_typer(tokens.app, name="tokens")
app.command("serve")(serve.serve)
app.add_typer(serve.certs_app, name="certs")
app.add_typer(workflows.app, name="workflows")
app.command("run")(run.run)
app.add_typer(runs.app, name="runs")
app.command("worker")(worker.worker)
app.command("workers")(workers.workers)
app.add_typer(plugins.app, name="plugins")
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(findings.app, name="findings")
app.add_typer(resources.app, name="resources")
app.command("search")(search.search)
app.command("ingest")(ingest.ingest)
app.command("doctor")(doctor.doctor)
app.command("status")(status.status)
app.add_typer(db.app, name="db")
app.add_typer(upstreams.app, name="upstreams")


def main() -> None:
    """Console-script entry point."""
    app()
