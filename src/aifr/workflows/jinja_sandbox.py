"""The Jinja2 side of workflow templates: the sandboxed environment, parsing, rendering.

Kept apart from :mod:`aifr.workflows.templating` so that Jinja2 (some 50 ms of imports)
loads with a process's first template, not with every ``aifr`` command.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, meta, nodes

from aifr.workflows.template_limits import (
    MAX_LENGTH,
    BoundedSandbox,
    refuse_unbounded_loops,
    render_deadline,
)

__all__ = ["JinjaTemplateError", "TemplateNames", "evaluate", "names_used", "render"]


class _JsonSandbox(BoundedSandbox):
    """The sandbox for JSON data: ``a.b`` on a mapping means its key ``b`` when there is one.

    Jinja2 tries a Python attribute before a key, so ``steps.q.output.items`` would be
    the ``dict.items`` method, not the ``items`` field of the output (likewise ``keys``,
    ``values``, ``get``, ``copy``...). Workflow data is JSON: a key always wins, and a
    method is reached only when no key has its name.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``obj[attribute]`` for a mapping holding that key, else Jinja2's rule."""
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


_ENV = _JsonSandbox(undefined=StrictUndefined, autoescape=False)


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
        refuse_unbounded_loops(tree)
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
        with render_deadline():
            value = _ENV.compile_expression(expression, undefined_to_none=False)(**context)
        if isinstance(value, Undefined):  # inputs.items[10], or a filter that gave up
            value._fail_with_undefined_error()
        return value
    except Exception as exc:  # noqa: BLE001 - any failure of user text is the template's (see _failure)
        raise _failure(exc) from None


def render(text: str, context: Mapping[str, Any]) -> str:
    """``text`` rendered as a template.

    Raises:
        JinjaTemplateError: it does not parse, names something undefined, is refused, or
            runs past :data:`~aifr.workflows.template_limits.MAX_RENDER_S`.
    """
    try:
        parts: list[str] = []
        size = 0
        with render_deadline():
            for part in _ENV.from_string(text).generate(**context):
                size += len(part)
                if size > MAX_LENGTH:  # a loop that writes without end: stop as it grows
                    raise JinjaTemplateError(f"the text would be over {MAX_LENGTH} characters")
                parts.append(part)
        return "".join(parts)
    except JinjaTemplateError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of user text is the template's (see _failure)
        raise _failure(exc) from None
