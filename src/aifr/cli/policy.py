"""``aifr policy check|explain|test|schema``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from aifr.app import build_grant_store, build_registry
from aifr.capabilities import CapabilitySpec, OperationType, Risk, RiskLevel
from aifr.capabilities.secret_syntax import secret_names
from aifr.cli.console import console, err_console, fail, print_json
from aifr.config import Settings, load_settings
from aifr.errors import AifrError, CapabilityError
from aifr.policy import PolicyEngine, PolicyRequest, policy_json_schema
from aifr.policy.cases import failed, load_case_table, run_case_table
from aifr.policy.explain import explain
from aifr.policy.lint import lint_directory

app = typer.Typer(help="Check, explain and test policies.", no_args_is_help=True)

ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="Project folder.")]
DirOption = Annotated[
    Path | None, typer.Option("--dir", help="Policy folder (default: the project's).")
]


def _policy_dir(settings: Settings, directory: Path | None) -> Path:
    return directory if directory is not None else settings.path(settings.policy.directory)


def parse_input(text: str) -> tuple[str, Any]:
    """``key=value``; the value is read as JSON when it parses, else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"expected KEY=VALUE, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


@app.command("check")
def check(
    project: ProjectOption = Path(),
    directory: DirOption = None,
    strict: Annotated[bool, typer.Option(help="Fail on warnings too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print findings as JSON.")] = False,
) -> None:
    """Lint the policy: schema errors, shadowed rules, unknown capabilities and roles."""
    try:
        settings = load_settings(project)
        known = [spec.id for spec in build_registry(settings).list(all_versions=True)]
    except AifrError as exc:
        fail(exc)
    folder = _policy_dir(settings, directory)
    findings = lint_directory(folder, known_capabilities=known)
    errors = [f for f in findings if f.severity == "error"]
    if as_json:
        print_json([f.to_dict() for f in findings])
    else:
        for finding in findings:
            style = "red" if finding.severity == "error" else "yellow"
            console.print(str(finding), style=style, soft_wrap=True)
        warnings = len(findings) - len(errors)
        console.print(f"{folder}: {len(errors)} errors, {warnings} warnings")
    if errors or (strict and findings):
        raise typer.Exit(1)


def _spec(
    settings: Settings,
    capability: str,
    operation: OperationType | None,
    risk: RiskLevel | None,
    tags: list[str],
) -> CapabilitySpec:
    found = build_registry(settings).get(capability)
    if found is not None and (operation is not None or risk is not None or tags):
        raise CapabilityError(
            f"capability {capability!r} is registered ({found.operation_type.value}, "
            f"{found.effective_risk.value} risk); --operation, --risk and --tag describe "
            "only a capability that is not",
            capability_id=capability,
        )
    if found is not None:
        return found
    if operation is None:
        raise CapabilityError(
            f"capability {capability!r} is not registered; describe it with "
            "--operation (and --risk, --tag) to explain a hypothetical one",
            capability_id=capability,
        )
    return CapabilitySpec(
        id=capability,
        operation_type=operation,
        risk=Risk(level=risk) if risk is not None else None,
        tags=tuple(tags),
    )


@app.command("explain")
def explain_command(
    principal: Annotated[str, typer.Option(help="Who asks.")],
    capability: Annotated[str, typer.Option(help="Capability id (or id@version).")],
    project: ProjectOption = Path(),
    directory: DirOption = None,
    role: Annotated[list[str] | None, typer.Option(help="Extra role (repeatable).")] = None,
    input_: Annotated[
        list[str] | None, typer.Option("--input", help="Input KEY=VALUE (repeatable).")
    ] = None,
    workflow: Annotated[str | None, typer.Option(help="Workflow id.")] = None,
    on_behalf_of: Annotated[
        list[str] | None, typer.Option(help="Delegation link, nearest first (repeatable).")
    ] = None,
    operation: Annotated[
        OperationType | None, typer.Option(help="Describe an unregistered capability.")
    ] = None,
    risk: Annotated[RiskLevel | None, typer.Option(help="Its risk level.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Its tags (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the explanation as JSON.")] = False,
) -> None:
    """Show which rule decides a request, and why each earlier rule did not."""
    try:
        settings = load_settings(project)
        spec = _spec(settings, capability, operation, risk, tag or [])
        engine = PolicyEngine.from_directory(
            _policy_dir(settings, directory), grants=build_grant_store(settings)
        )
        inputs = dict(parse_input(item) for item in input_ or ())
        request = PolicyRequest(
            principal=principal,
            capability=spec,
            inputs=inputs,
            roles=frozenset(role or ()),
            workflow_id=workflow,
            on_behalf_of=tuple(on_behalf_of or ()),
            secrets=secret_names(inputs),
        )
        result = explain(engine, request)
    except AifrError as exc:
        fail(exc)
    if as_json:
        print_json(result.to_dict())
        return
    console.print(
        Text.assemble(
            (principal, "bold"),
            " -> ",
            (spec.id, "bold"),
            f" ({spec.operation_type.value}, {spec.effective_risk.value} risk)",
        )
    )
    for line in result.lines():
        console.print(line, soft_wrap=True)


@app.command("test")
def test_command(
    file: Annotated[Path, typer.Argument(help="A policy test table (YAML).")],
    project: ProjectOption = Path(),
    directory: DirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Run a table of cases against the policy; exit 1 on any mismatch."""
    try:
        settings = load_settings(project)
        table = load_case_table(file)
        registry = build_registry(settings)
        results = run_case_table(
            table, policy_dir=_policy_dir(settings, directory), lookup=registry.get
        )
    except AifrError as exc:
        fail(exc)
    bad = failed(results)
    if as_json:
        print_json(
            [
                {
                    "name": r.name,
                    "line": r.source.line,
                    "passed": r.passed,
                    "expected": r.expected,
                    "actual": r.actual,
                    "problems": list(r.problems),
                }
                for r in results
            ]
        )
    else:
        table_view = Table(title=f"{file}: {len(results)} cases", title_justify="left")
        for column in ("line", "case", "expected", "result"):
            table_view.add_column(column)
        for r in results:
            status = Text("pass", style="green") if r.passed else Text("FAIL", style="red")
            table_view.add_row(str(r.source.line), r.name, r.expected, status)
        console.print(table_view)
        for r in bad:
            err_console.print(
                Text.assemble(("FAIL", "bold red"), f" {r.source}: {r.name}"), soft_wrap=True
            )
            err_console.print(f"- expected: {r.expected}", style="red", soft_wrap=True)
            err_console.print(f"+ actual:   {r.actual}", style="green", soft_wrap=True)
            for problem in r.problems:
                err_console.print(f"    {problem}", soft_wrap=True)
        console.print(f"{len(results) - len(bad)} passed, {len(bad)} failed")
    if bad:
        raise typer.Exit(1)


@app.command("schema")
def schema() -> None:
    """Print the JSON Schema of policy files (for editors)."""
    print_json(policy_json_schema())
