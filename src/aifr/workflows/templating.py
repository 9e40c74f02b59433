"""Step inputs templated from workflow inputs and earlier outputs, without running code.

Templates use Jinja2's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` with
``StrictUndefined``: attribute and item access, filters and tests work; calling methods
that mutate, touching private attributes, importing or executing anything does not, and
a name that does not exist is an error rather than an empty string.

A string that is exactly one expression (``"{{ steps.read.output.content }}"``) keeps
the native type of the value (a number stays a number, a mapping stays a mapping); any
other string containing ``{{`` or ``{%`` renders to text. The names a template sees are
``inputs`` (the run's inputs), ``steps`` (``steps.<id>.output`` of completed steps),
``run`` (``id``, ``workflow``, ``principal``) and, in a compensation override,
``output`` (the compensated step's own output). Jinja2 itself is reached through
:mod:`aifr.workflows.jinja_sandbox`, imported with the first template checked or rendered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import JsonValue

from aifr.errors import ErrorCode, WorkflowError

__all__ = ["TEMPLATE_NAMES", "check_templates", "has_templates", "render_inputs"]

TEMPLATE_NAMES = frozenset({"inputs", "steps", "run"})

_ONE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.DOTALL)


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def _strings(value: JsonValue, path: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(path, value)] if _is_template(value) else []
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [item for i, v in enumerate(value) for item in _strings(v, f"{path}[{i}]")]
    return []


def has_templates(values: Mapping[str, JsonValue]) -> bool:
    """Whether any string in ``values`` (nested too) is a template."""
    return _has_template(dict(values))


def _has_template(value: JsonValue) -> bool:
    if isinstance(value, str):
        return _is_template(value)
    if isinstance(value, dict):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return False


def check_templates(
    values: Mapping[str, JsonValue],
    *,
    where: str,
    inputs: set[str],
    earlier_steps: set[str],
    extra_names: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Parse every template in ``values`` and check the names it uses exist.

    A template may only use the known top-level names, declared inputs and steps that
    come before it, so a typo fails when the workflow loads, not halfway through a run.

    Raises:
        ValueError: a template does not parse or names something unknown (pydantic turns
            it into the workflow's validation error, with ``where`` as the location).
    """
    strings = _strings(dict(values), where)
    if not strings:
        return
    from aifr.workflows.jinja_sandbox import JinjaTemplateError, names_used  # loads Jinja2

    allowed = TEMPLATE_NAMES | set(extra_names)
    for path, text in strings:
        try:
            names = names_used(text)
        except JinjaTemplateError as exc:
            raise ValueError(f"{path}: template does not parse: {exc}") from None
        unknown = names.top_level - allowed
        if unknown:
            raise ValueError(f"{path}: unknown name(s) {sorted(unknown)} (use {sorted(allowed)})")
        missing_inputs = names.inputs - inputs
        if missing_inputs:
            raise ValueError(f"{path}: no workflow input(s) {sorted(missing_inputs)}")
        missing_steps = names.steps - earlier_steps
        if missing_steps:
            raise ValueError(f"{path}: step(s) {sorted(missing_steps)} do not run before this one")


def _json_safe(value: Any, path: str) -> JsonValue:
    try:
        safe: JsonValue = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        raise WorkflowError(
            f"{path}: the template produced a {type(value).__name__}, not a JSON value",
            code=ErrorCode.WORKFLOW_TEMPLATE_FAILED,
            path=path,
        ) from None
    return safe


def _render(text: str, context: Mapping[str, Any], path: str) -> JsonValue:
    from aifr.workflows.jinja_sandbox import JinjaTemplateError, evaluate, render  # loads Jinja2

    try:
        whole = _ONE_EXPRESSION.match(text)
        if whole is not None:
            return _json_safe(evaluate(whole["expr"], context), path)
        return render(text, context)
    except JinjaTemplateError as exc:
        raise WorkflowError(
            f"{path}: template {text!r} failed: {exc}",
            code=ErrorCode.WORKFLOW_TEMPLATE_FAILED,
            path=path,
        ) from None


def _walk(value: JsonValue, context: Mapping[str, Any], path: str) -> JsonValue:
    if isinstance(value, str):
        return _render(value, context, path) if _is_template(value) else value
    if isinstance(value, dict):
        return {k: _walk(v, context, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, context, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def render_inputs(
    values: Mapping[str, JsonValue], context: Mapping[str, Any], *, where: str
) -> dict[str, JsonValue]:
    """Render every template in ``values`` against ``context``.

    Raises:
        WorkflowError: ``workflow.template_failed`` naming the path of the bad template
            (an unknown name, a sandbox refusal or a non-JSON result).
    """
    return {k: _walk(v, context, f"{where}.{k}") for k, v in values.items()}
