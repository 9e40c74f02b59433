"""``aifr init``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from aifr.cli.console import console, fail
from aifr.config import init_project
from aifr.errors import AifrError

__all__ = ["init"]


def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create the project in.")] = Path(),
) -> None:
    """Create an aifr project: aifr.toml, policies/, workflows/ and .aifr/."""
    try:
        created = init_project(directory)
    except AifrError as exc:
        fail(exc)
    if not created:
        console.print(f"{directory} is already an aifr project; nothing changed")
        return
    for path in created:
        console.print(Text.assemble(("created", "green"), f" {path}"))
    console.print(f"Next: cd {directory} && aifr capabilities list")
