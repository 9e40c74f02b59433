"""The ``aifr`` command: one Typer app, one module per command group."""

from __future__ import annotations

import typer

from aifr.cli import (
    approvals,
    audit,
    call,
    capabilities,
    demo,
    grants,
    ingest,
    mcp,
    policy,
    project,
    run,
    runs,
    search,
    worker,
    workflows,
)

__all__ = ["app", "main"]

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
app.add_typer(workflows.app, name="workflows")
app.command("run")(run.run)
app.add_typer(runs.app, name="runs")
app.command("worker")(worker.worker)
app.command("search")(search.search)
app.command("ingest")(ingest.ingest)


def main() -> None:
    """Console-script entry point."""
    app()
