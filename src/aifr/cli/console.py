"""Shared CLI output: one Rich console and the one way errors are printed.

Both consoles read no markup: what they print holds principals, paths, inputs and
error messages that come from agents, and Rich markup in such text (``[/x]``,
``[conceal]``) would crash the command or hide part of what an approver is shown.
Styles are attached explicitly, with :class:`rich.text.Text` or ``style=``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from aifr.errors import AifrError, exit_code_for

__all__ = ["console", "err_console", "error_line", "fail", "print_json"]

console = Console(highlight=False, markup=False)
err_console = Console(stderr=True, highlight=False, markup=False)


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
