"""``aifr capabilities list|show|manifest``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from aifr.app import App, build_app
from aifr.capabilities import CapabilitySpec, OperationType, RiskLevel, build_manifest
from aifr.cli.console import console, fail, print_json
from aifr.errors import AifrError

app = typer.Typer(help="Inspect registered capabilities.", no_args_is_help=True)

ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="Project folder.")]

_RISK_STYLE = {"LOW": "green", "MEDIUM": "yellow", "HIGH": "red", "CRITICAL": "bold red"}


def _compensation(spec: CapabilitySpec) -> str:
    comp = spec.compensation
    if not comp.supported:
        return "-" if spec.side_effects.reversible else "none (irreversible)"
    return comp.capability_id or comp.strategy or "supported"


def _risk(spec: CapabilitySpec) -> Text:
    level = spec.effective_risk.value
    suffix = "" if spec.risk is not None else " (undeclared)"
    return Text.assemble((level, _RISK_STYLE[level]), suffix)


@app.command("list")
def list_capabilities(
    project: ProjectOption = Path(),
    tag: Annotated[str | None, typer.Option(help="Only capabilities with this tag.")] = None,
    risk: Annotated[RiskLevel | None, typer.Option(help="Only this risk level.")] = None,
    operation: Annotated[OperationType | None, typer.Option(help="Only this operation.")] = None,
    all_versions: Annotated[bool, typer.Option("--all-versions", help="Every version.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List registered capabilities as a table (``--json``: a list of objects)."""
    try:
        registry = build_app(project).registry
    except AifrError as exc:
        fail(exc)
    specs = registry.list(tag=tag, risk=risk, operation=operation, all_versions=all_versions)
    if as_json:
        print_json(
            [
                {
                    "id": spec.id,
                    "version": spec.version,
                    "operation": spec.operation_type.value,
                    "risk": spec.effective_risk.value,
                    "risk_declared": spec.risk is not None,
                    "compensation": _compensation(spec),
                    "fingerprint": spec.fingerprint,
                }
                for spec in specs
            ]
        )
        return
    table = Table(title=f"{len(specs)} capabilities", title_justify="left")
    for column in ("id", "version", "operation", "risk", "compensation"):
        table.add_column(column)
    for spec in specs:
        table.add_row(
            spec.id, spec.version, spec.operation_type.value, _risk(spec), _compensation(spec)
        )
    console.print(table)


@app.command("show")
def show_capability(
    ref: Annotated[str, typer.Argument(help="Capability id or id@version.")],
    project: ProjectOption = Path(),
    as_json: Annotated[bool, typer.Option("--json", help="Print the spec as JSON.")] = False,
) -> None:
    """Show one capability's full spec and its circuit-breaker state."""
    try:
        aifr_app = build_app(project)
        spec = aifr_app.registry.resolve(ref).spec
        circuit = _circuit(aifr_app, spec.id)
    except AifrError as exc:
        fail(exc)
    if as_json:
        print_json(spec.model_dump(mode="json"))
        return
    console.print(
        Text.assemble((spec.id, "bold"), f" @ {spec.version}  ", (spec.fingerprint, "dim"))
    )
    console.print(spec.description or Text("(no description)", style="dim"))
    console.print(Text.assemble(f"operation: {spec.operation_type.value}   risk: ", _risk(spec)))
    if spec.risk and spec.risk.justification:
        console.print(f"justification: {spec.risk.justification}")
    console.print(
        f"side effects: reversible={str(spec.side_effects.reversible).lower()} "
        f"scope={spec.side_effects.scope}"
    )
    console.print(f"compensation: {_compensation(spec)}")
    console.print(
        f"idempotent: {str(spec.idempotent).lower()}   tags: {', '.join(spec.tags) or '-'}"
    )
    console.print(f"circuit: {circuit}")
    console.print_json(data=spec.input_schema)


def _circuit(aifr_app: App, capability_id: str) -> str:
    """The capability's recorded circuit state (closed when nothing was recorded yet)."""
    database = aifr_app.settings.sqlite_path
    if database is not None and not database.exists():
        return "closed"
    try:
        breakers = aifr_app.runtime.circuits
        state, failures = breakers.state(capability_id), breakers.failures(capability_id)
    finally:
        aifr_app.close()
    return f"{state.value} ({failures} consecutive failures)"


@app.command("manifest")
def manifest(project: ProjectOption = Path()) -> None:
    """Print the JSON manifest of everything registered, with fingerprints."""
    try:
        registry = build_app(project).registry
    except AifrError as exc:
        fail(exc)
    print_json(build_manifest(registry))


__all__ = ["app"]
