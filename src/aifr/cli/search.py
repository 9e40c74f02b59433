"""``aifr search "QUERY" [--repo R] [--k 10] [--json]``: the governed ``knowledge.search``.

The search runs as one invocation of ``knowledge.search`` through the runtime (policy,
audit), as the configured principal or ``--as``; each result prints as
``repo:path:start-end`` with a snippet, then a line per repository the policy kept out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from aifr.app import build_app
from aifr.cli.call import exit_status, print_result
from aifr.cli.console import console, fail, print_json
from aifr.errors import AifrError
from aifr.invocation import CallOptions
from aifr.observability.logs import configure_logging

__all__ = ["search"]


def _print_hits(output: dict[str, Any]) -> None:
    hits = output.get("hits", [])
    for hit in hits:
        where = f"{hit['repo']}:{hit['path']}:{hit['start_line']}-{hit['end_line']}"
        console.print(Text.assemble((where, "bold cyan"), (f"  score {hit['score']:.4f}", "dim")))
        for line in str(hit["snippet"]).splitlines():
            console.print(Text("    " + line))
    if not hits:
        console.print("no results")
    for repo in output.get("repos", []):
        if not repo["searched"]:
            console.print(Text(f"{repo['repo']}: {repo['explain']}", style="yellow"))


def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    repo: Annotated[
        str | None, typer.Option("--repo", help="Only this repository (default: all readable).")
    ] = None,
    k: Annotated[int, typer.Option("--k", help="How many results.")] = 10,
    principal: Annotated[
        str | None, typer.Option("--as", help="Principal to act as (default: settings.principal).")
    ] = None,
    role: Annotated[
        list[str] | None, typer.Option("--role", help="A role of the principal.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    project: Annotated[Path, typer.Option("--project", "-p", help="Project folder.")] = Path(),
) -> None:
    """Search the ingested repositories (hybrid: meaning and keywords) through policy and audit."""
    try:
        app = build_app(project)
    except AifrError as exc:
        fail(exc)
    configure_logging(app.settings.log_level)
    inputs: dict[str, Any] = {"query": query, "k": k}
    if repo is not None:
        inputs["repo"] = repo
    try:
        result = app.runtime.invoke(
            "knowledge.search",
            inputs,
            app.settings.principal if principal is None else principal,
            CallOptions(roles=frozenset(role or ())),
        )
    except AifrError as exc:
        fail(exc)
    finally:
        app.close()
    if as_json:
        print_json(result.to_dict())
    elif result.ok and isinstance(result.output, dict):
        _print_hits(result.output)
    else:
        print_result(result, as_json=False)
    raise typer.Exit(exit_status(result))
