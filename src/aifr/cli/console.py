"""Shared CLI output: one Rich console and the one way errors are printed."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from aifr.errors import AifrError, exit_code_for

__all__ = ["console", "err_console", "fail", "print_json"]

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_json(value: Any) -> None:
    """Print a JSON document on stdout (plain, so it can be piped)."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def fail(error: AifrError) -> NoReturn:
    """Print an error with its code and exit with the code's exit status."""
    err_console.print(f"[bold red]error[/] [dim]{error.code.value}[/]: {escape(error.message)}")
    raise typer.Exit(exit_code_for(error.code))
