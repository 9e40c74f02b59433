"""``aifr call CAPABILITY[@VERSION] key=value ... --as PRINCIPAL``: one governed invocation.

Values are parsed by the capability's input schema (``count=3`` is an integer when the
schema says so, a string otherwise); ``--input-file`` reads a JSON object first and
``key=value`` pairs override it. Exit status: 0 ok, 3 denied, 4 pending approval, and
the error code's status otherwise (1 failed, 2 bad input, 5 not found, 6 timeout).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import JsonValue
from rich.text import Text

from aifr.app import App, build_app
from aifr.capabilities import CapabilitySpec
from aifr.cli.console import console, err_console, fail, print_json
from aifr.cli.json_input import JsonInputError, loads_strict
from aifr.cli.upstream_runtime import attach_upstreams, detach_upstreams
from aifr.errors import AifrError, FieldError, InputValidationError, exit_code_for
from aifr.invocation import CallOptions, Result, Status
from aifr.observability.logs import configure_logging

__all__ = ["call", "exit_status", "parse_assignments", "print_result", "repeated_input"]

ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="Project folder.")]

_STATUS_STYLE = {
    Status.OK: "bold green",
    Status.DENIED: "bold red",
    Status.PENDING_APPROVAL: "bold yellow",
    Status.FAILED: "bold red",
}


def _schema_type(spec: CapabilitySpec | None, key: str) -> tuple[str | None, bool]:
    """The JSON type the schema gives input ``key``, and whether it also admits ``null``.

    The type is ``None`` when the schema names several or none.
    """
    if spec is None:
        return None, False
    properties = spec.input_schema.get("properties")
    if not isinstance(properties, Mapping):
        return None, False
    prop = properties.get(key)
    if not isinstance(prop, Mapping):
        return None, False
    kind = prop.get("type")
    if isinstance(kind, str):
        return kind, False
    options = prop.get("anyOf")
    if isinstance(options, list):  # Optional[X] is anyOf [X, null]
        kinds = [o.get("type") for o in options if isinstance(o, Mapping)]
        named = [k for k in kinds if isinstance(k, str) and k != "null"]
        return (named[0] if len(named) == 1 else None), "null" in kinds
    return None, False


def _bad(key: str, message: str, expected: str, received: str) -> InputValidationError:
    return InputValidationError(
        f"argument {key}={received!r}: {message}",
        errors=[
            FieldError(path=key, code="type", message=message, expected=expected, received=received)
        ],
    )


def repeated_input(shown: str, key: str, raw: str) -> InputValidationError:
    """The refusal of an input given twice: the last one winning may not be what was meant.

    ``shown`` is how the pair was passed (``argument`` or ``--input``).
    """
    message = f"{key} is given twice; give each input once"
    return InputValidationError(
        f"{shown} {key}={raw!r}: {message}",
        errors=[FieldError(path=key, code="duplicate", message=message)],
    )


def _parse_value(key: str, raw: str, kind: str | None, *, is_nullable: bool) -> JsonValue:
    if kind == "string":
        return raw
    if kind == "boolean":
        lowered = raw.lower()
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0"):
            return False
        if is_nullable and lowered == "null":
            return None
        raise _bad(key, "expected a boolean (true/false)", "boolean", raw)
    try:
        return loads_strict(raw)
    except JsonInputError as exc:
        if kind in ("integer", "number", "array", "object"):
            raise _bad(key, f"expected a JSON {kind}: {exc}", kind, raw[:200]) from None
        return raw  # text, for a schema that admits text among other types


def parse_assignments(pairs: list[str], spec: CapabilitySpec | None) -> dict[str, JsonValue]:
    """Turn ``key=value`` pairs into inputs, typed by ``spec``'s input schema.

    Raises:
        InputValidationError: a pair has no ``=``, names an input twice, or a value does
            not parse as its type.
    """
    inputs: dict[str, JsonValue] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise _bad(pair, "expected key=value", "key=value", pair)
        if key in inputs:
            raise repeated_input("argument", key, raw)
        kind, is_nullable = _schema_type(spec, key)
        inputs[key] = _parse_value(key, raw, kind, is_nullable=is_nullable)
    return inputs


def _read_input_file(path: Path) -> dict[str, JsonValue]:
    try:
        data = loads_strict(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _bad(
            "--input-file", f"cannot read {path}: {exc.strerror}", "file", str(path)
        ) from None
    except UnicodeDecodeError:
        raise _bad("--input-file", f"{path} is not UTF-8 text", "JSON object", str(path)) from None
    except JsonInputError as exc:
        raise _bad("--input-file", f"{path} is not JSON: {exc}", "JSON object", str(path)) from None
    if not isinstance(data, dict):
        raise _bad("--input-file", f"{path} must hold a JSON object", "object", type(data).__name__)
    return data


def exit_status(result: Result) -> int:
    """The process exit status for a result."""
    if result.status is Status.OK:
        return 0
    if result.status is Status.DENIED:
        return 3
    if result.status is Status.PENDING_APPROVAL:
        return 4
    code = exit_code_for(result.error.code) if result.error is not None else 1
    return 1 if code in (3, 4) else code  # 3 and 4 mean denied and pending, never failed


def print_result(result: Result, *, as_json: bool) -> None:
    """Print a result: the JSON document, or status, output, decision and audit id."""
    if as_json:
        print_json(result.to_dict())
        return
    style = _STATUS_STYLE[result.status]
    version = f"@{result.capability_version}" if result.capability_version else ""
    replay = " (replayed: idempotency key seen before)" if result.replayed else ""
    console.print(
        Text.assemble(
            (result.status.value, style), f" {result.capability_id}{version}", (replay, "dim")
        )
    )
    if result.ok:
        console.print_json(data=result.output)
    if result.error is not None:
        target = console if result.status is Status.PENDING_APPROVAL else err_console
        target.print(Text.assemble((result.error.code.value, "dim"), f": {result.error.message}"))
    decision = result.decision
    if decision is not None:
        console.print(
            f"decision: {decision.decision.value}  rule: {decision.rule_id or '-'}"
            + (f"  reason: {decision.reason}" if decision.reason else "")
        )
    if result.approval_id:
        console.print(f"approval: {result.approval_id}")
    for failure in result.hook_failures:
        err_console.print(
            Text.assemble(
                ("hook failed", "yellow"),
                f" {failure.hook} ({failure.stage}, {failure.code}): {failure.message}",
            )
        )
    console.print(f"audit record: {result.audit_id if result.audit_id is not None else '-'}")


def call(
    ref: Annotated[str, typer.Argument(help="Capability id or id@version.")],
    assignments: Annotated[
        list[str] | None, typer.Argument(help="Inputs as key=value (typed by the input schema).")
    ] = None,
    principal: Annotated[
        str | None, typer.Option("--as", help="Principal to act as (default: settings.principal).")
    ] = None,
    role: Annotated[
        list[str] | None, typer.Option("--role", help="A role of the principal.")
    ] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input-file", help="JSON object of inputs.")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Return the first result for this key.")
    ] = None,
    approval: Annotated[
        str | None, typer.Option("--approval", help="Run an approved request (approval id).")
    ] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    project: ProjectOption = Path(),
) -> None:
    """Invoke a capability through policy, approval, limits and audit."""
    try:
        app = build_app(project)
    except AifrError as exc:
        fail(exc)
    configure_logging(app.settings.log_level)
    gateway = attach_upstreams(app, command="call")
    try:
        result = _invoke(
            app, ref, assignments or [], principal, role or [], input_file, idempotency_key,
            approval, timeout,
        )  # fmt: skip
    except AifrError as exc:
        fail(exc)
    finally:
        detach_upstreams(gateway)
        app.close()
    print_result(result, as_json=as_json)
    raise typer.Exit(exit_status(result))


def _invoke(
    app: App,
    ref: str,
    assignments: list[str],
    principal: str | None,
    roles: list[str],
    input_file: Path | None,
    idempotency_key: str | None,
    approval: str | None,
    timeout: float | None,
) -> Result:
    if idempotency_key is not None and not idempotency_key.strip():
        # The runtime takes an empty key for none: the retry it was meant to make safe
        # (often `--idempotency-key "$KEY"` with KEY unset) would run a second time.
        raise _bad("--idempotency-key", "is empty", "a non-empty key", idempotency_key)
    spec = app.registry.get(ref)
    inputs: dict[str, Any] = _read_input_file(input_file) if input_file is not None else {}
    inputs.update(parse_assignments(assignments, spec))
    return app.runtime.invoke(
        ref,
        inputs,
        app.settings.principal if principal is None else principal,  # --as "" is refused
        CallOptions(
            roles=frozenset(roles),
            idempotency_key=idempotency_key,
            approval_id=approval,
            timeout_s=timeout,
        ),
    )
