"""Size limits for workflow templates, so a run's inputs cannot make a worker run out of memory.

Jinja2's sandbox stops templates from reaching Python internals, but not from asking for
a value too large to build: ``{{ inputs.s * inputs.n }}`` with ``n`` supplied by an
agent, ``{{ 9 ** 9 ** 9 }}``, ``{{ '%999999999d' % 1 }}``, ``{{ x | center(10**9) }}``.
:class:`BoundedSandbox` refuses each of these before building the value (a
``SecurityError``, which fails the step with ``workflow.template_failed``), and rendered
text longer than :data:`MAX_LENGTH` is cut off as it is produced. Values passed through
as they are (``{{ steps.read.output.content }}``) are never limited: they exist already.

Nor may a template run for long: loops nested over an agent's list, or a macro that calls
itself twice, build nothing large yet can spin a worker for hours. Inside
:func:`render_deadline`, every loop iteration and every call a template makes checks the
clock, and past :data:`MAX_RENDER_S` the render fails. A ``recursive`` loop is refused:
its inner calls iterate where no check can reach.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from string import Formatter
from typing import Any

from jinja2 import filters, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "MAX_INT_BITS",
    "MAX_LENGTH",
    "MAX_RENDER_S",
    "BoundedSandbox",
    "refuse_unbounded_loops",
    "render_deadline",
]

MAX_LENGTH = 16 * 1024 * 1024
"""The most characters (or items) a template may build by repeating or padding."""

MAX_INT_BITS = 14_000
"""The largest integer, in bits, a template may compute (about 4,200 digits: Python
writes no longer integer as text, so JSON could not carry a larger one anyway)."""

MAX_RENDER_S = 5.0
"""The longest one template (or expression) may take to render, in seconds."""

_deadline: ContextVar[tuple[float, float] | None] = ContextVar(
    "aifr_template_deadline", default=None
)

_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _too_long(what: str, size: int) -> SecurityError:
    return SecurityError(f"{what} would be {size} long; templates may build at most {MAX_LENGTH}")


def _check_int(left: int, right: int, operator: str) -> None:
    if operator == "**":
        bits = right * abs(left).bit_length() if right > 0 and abs(left) > 1 else 0
    else:
        bits = left.bit_length() + right.bit_length()
    if bits > MAX_INT_BITS:
        raise SecurityError(
            f"{operator!r} would make a number of about {bits} bits; "
            f"templates may compute at most {MAX_INT_BITS}"
        )


def _check_repeat(left: Any, right: Any) -> None:
    """``sequence * count`` (either way round) must stay within :data:`MAX_LENGTH`."""
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(count, int):
            if len(seq) * count > MAX_LENGTH:
                raise _too_long("the repeated value", len(seq) * count)
            return


def check_percent_format(text: str) -> None:
    """Refuse a ``%`` format whose width or precision would build a huge string."""
    for match in _PERCENT_SPEC.finditer(text):
        for part in match.groups():
            if part == "*":
                raise SecurityError("a '*' width or precision is not allowed in templates")
            if part is not None and int(part) > MAX_LENGTH:
                raise _too_long("a formatted field", int(part))


def _check_format_method(text: str) -> None:
    """Refuse a ``str.format`` spec whose width or precision would build a huge string."""
    for _, _, spec, _ in Formatter().parse(text):
        if not spec:
            continue
        if "{" in spec:
            raise SecurityError("nested fields in a format spec are not allowed in templates")
        for digits in _DIGITS.findall(spec):
            if int(digits) > MAX_LENGTH:
                raise _too_long("a formatted field", int(digits))


def _check_width(width: object) -> None:
    size = len(width) if isinstance(width, str) else width
    if isinstance(size, int) and size > MAX_LENGTH:
        raise _too_long("the padding", size)


@contextmanager
def render_deadline(seconds: float | None = None) -> Iterator[None]:
    """Templates rendered inside this block fail once they have run ``seconds``.

    ``None`` means :data:`MAX_RENDER_S` (read at entry, so tests may lower it).
    """
    limit = MAX_RENDER_S if seconds is None else seconds
    token = _deadline.set((time.monotonic() + limit, limit))
    try:
        yield
    finally:
        _deadline.reset(token)


def _check_deadline() -> None:
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline[0]:
        raise SecurityError(
            f"the template ran for over {deadline[1]:g} s (loops nested over large values?); "
            f"templates may take at most {deadline[1]:g} s"
        )


def _timed(iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        _check_deadline()
        yield item


def refuse_unbounded_loops(tree: nodes.Template) -> None:
    """Refuse a ``recursive`` loop: its inner iterations escape the deadline checks.

    Raises:
        SecurityError: ``tree`` has one.
    """
    for loop in tree.find_all(nodes.For):
        if loop.recursive:
            raise SecurityError(
                f"line {loop.lineno}: recursive loops are not allowed in workflow templates"
            )


def _bounded_center(value: str, width: int = 80) -> str:
    _check_width(width)
    return filters.do_center(value, width)


def _bounded_indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    size = len(width) if isinstance(width, str) else width
    if isinstance(size, int):
        _check_width(size * (str(s).count("\n") + 1))
    return filters.do_indent(s, width, first, blank)


def _bounded_format(value: str, *args: Any, **kwargs: Any) -> str:
    check_percent_format(str(value))
    return filters.do_format(value, *args, **kwargs)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox that also refuses to build oversized values."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals.pop("lipsum", None)  # lipsum(n) writes n paragraphs of filler
        self.filters.update(center=_bounded_center, indent=_bounded_indent, format=_bounded_format)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Apply ``operator`` once the size of its result is known to be bearable."""
        if isinstance(left, int) and isinstance(right, int) and operator in ("*", "**"):
            _check_int(left, right, operator)
        elif operator == "*":
            _check_repeat(left, right)
        elif operator == "%" and isinstance(left, str):
            check_percent_format(left)
        return super().call_binop(context, operator, left, right)

    def timed_iteration(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """What every ``{% for %}`` iterates: ``iterable``, checking the deadline per item."""
        return _timed(iterable)

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        """Compile ``source`` with each loop's iterable passed through :meth:`timed_iteration`."""
        refuse_unbounded_loops(source)
        for loop in source.find_all(nodes.For):
            loop.iter = nodes.Call(
                nodes.EnvironmentAttribute("timed_iteration"),
                [loop.iter],
                [],
                None,
                None,
                lineno=loop.iter.lineno,
            )
        return super()._generate(source, name, filename, defer_init=defer_init)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja2's own signature, double underscores avoid clashes with kwargs
        """Call ``__obj`` from a template, refusing padding methods asked for too much.

        Every call checks the deadline, so a macro that calls itself is bounded too.
        """
        _check_deadline()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and getattr(__obj, "__name__", "") in _PADDING_METHODS:
            for value in (*args, *kwargs.values()):
                _check_width(value)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Sandbox ``str.format`` as Jinja2 does, after checking its field widths."""
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format_method(value.__self__)
        return wrapped
