"""Shared CLI output: one Rich console and the one way errors are printed.

Both consoles read no markup: what they print holds principals, paths, inputs and
error messages that come from agents, and Rich markup in such text (``[/x]``,
``[conceal]``) would crash the command or hide part of what an approver is shown.
Styles are attached explicitly, with :class:`rich.text.Text` or ``style=``.

Nothing is ever broken by wrapping: both consoles soft-wrap (a line is written whole and
a terminal folds it on screen, so a copied path or id is whole and ``grep`` finds it),
and when the output is not a terminal (a pipe, a file) they have no width limit, so
tables print every value whole instead of cutting it with an ellipsis.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

import typer
from rich.console import Console, ConsoleDimensions
from rich.text import Text

from aifr.errors import AifrError, exit_code_for

__all__ = ["console", "err_console", "error_line", "fail", "heading", "print_json"]

# Wide enough for any value a table holds; tables never expand to it (``expand=False``).
_UNBOUNDED = 1_000_000


class _WholeLineConsole(Console):
    """A console that wraps nothing and, off a terminal, has no width limit.

    The terminal test is made at each print (``is_terminal``), not at start-up, so a
    console built before stdout was redirected (as tests and ``2>file`` do) still sees
    where its output goes.
    """

    @property
    def size(self) -> ConsoleDimensions:
        """The terminal's size; off a terminal, a width no value reaches."""
        size = Console.size.fget(self)  # type: ignore[attr-defined]  # Rich's property
        return size if self.is_terminal else ConsoleDimensions(_UNBOUNDED, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]  # Rich's property


console = _WholeLineConsole(highlight=False, markup=False, soft_wrap=True)
err_console = _WholeLineConsole(stderr=True, highlight=False, markup=False, soft_wrap=True)


def heading(title: str) -> None:
    """A section heading: a rule across a terminal, the bare title in a pipe or file."""
    if console.is_terminal:
        console.rule(Text(title, style="bold"))
    else:
        console.print(f"-- {title} --")


def print_json(value: Any) -> None:
    """Print a JSON document on stdout (plain, so it can be piped)."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def error_line(error: Mapping[str, Any], where: str = "") -> Text:
    """A stored error (``{"code", "message"}``) as one line: the code dimmed, then the message."""
    return Text.assemble((str(error.get("code")), "dim"), f"{where}: {error.get('message')}")


def fail(error: AifrError) -> NoReturn:
    """Print an error with its code and exit with the code's exit status."""
    err_console.print(
        Text.assemble(("error", "bold red"), " ", (error.code.value, "dim"), ": ", error.message)
    )
    raise typer.Exit(exit_code_for(error.code))
