"""The Jinja2 side of workflow templates: the sandboxed environment, parsing, rendering.

Kept apart from :mod:`aifr.workflows.templating` so that Jinja2 (some 50 ms of imports)
loads with a process's first template, not with every ``aifr`` command.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["JinjaTemplateError", "TemplateNames", "evaluate", "names_used", "render"]

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class JinjaTemplateError(Exception):
    """A template did not parse or render; the message is Jinja2's or the failure's."""


def _failure(exc: Exception) -> JinjaTemplateError:
    """The error for a template that failed, whatever raised it.

    Jinja2 raises its own ``TemplateError``s, but a filter or operator applied to a
    value of the wrong kind raises what Python raises (``xmlattr`` on a string:
    ``AttributeError``; ``1/0``: ``ZeroDivisionError``; ``sum`` over strings:
    ``TypeError``). Templates and the values they see come from workflow files and run
    inputs, so every such failure is the template's, and must fail its step rather than
    escape the engine and leave the run stuck ``running``.
    """
    if isinstance(exc, TemplateError):
        return JinjaTemplateError(str(exc))
    return JinjaTemplateError(f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class TemplateNames:
    """The names a template uses: top-level ones, and ``inputs.X`` / ``steps.X``."""

    top_level: frozenset[str]
    inputs: frozenset[str]
    steps: frozenset[str]


def names_used(text: str) -> TemplateNames:
    """Parse ``text`` and list the names it uses.

    Raises:
        JinjaTemplateError: it does not parse.
    """
    try:
        tree = _ENV.parse(text)
    except (TemplateError, RecursionError) as exc:  # RecursionError: nesting too deep
        raise _failure(exc) from None
    return TemplateNames(
        top_level=frozenset(meta.find_undeclared_variables(tree)),
        inputs=frozenset(_attribute_refs(tree, "inputs")),
        steps=frozenset(_attribute_refs(tree, "steps")),
    )


def _attribute_refs(tree: nodes.Template, root: str) -> set[str]:
    """Names used as ``root.NAME`` or ``root['NAME']`` anywhere in ``tree``."""
    found: set[str] = set()
    for node in tree.find_all(nodes.Getattr):
        target = node.node
        if isinstance(target, nodes.Name) and target.name == root:
            found.add(node.attr)
    for item in tree.find_all(nodes.Getitem):
        target = item.node
        key = item.arg
        if (
            isinstance(target, nodes.Name)
            and target.name == root
            and isinstance(key, nodes.Const)
            and isinstance(key.value, str)
        ):
            found.add(key.value)
    return found


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """The native value of one expression (the inside of ``{{ ... }}``).

    Raises:
        JinjaTemplateError: it does not parse, names something undefined or is refused.
    """
    try:
        return _ENV.compile_expression(expression, undefined_to_none=False)(**context)
    except Exception as exc:  # noqa: BLE001 - any failure of user text is the template's (see _failure)
        raise _failure(exc) from None


def render(text: str, context: Mapping[str, Any]) -> str:
    """``text`` rendered as a template.

    Raises:
        JinjaTemplateError: it does not parse, names something undefined or is refused.
    """
    try:
        return _ENV.from_string(text).render(**context)
    except Exception as exc:  # noqa: BLE001 - any failure of user text is the template's (see _failure)
        raise _failure(exc) from None
