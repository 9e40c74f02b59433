"""Every command's ``--help`` renders: no help text is taken for markup and crashes."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from aifr.cli.main import app


def _command_paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [path]
    for name, sub in getattr(command, "commands", {}).items():
        paths.extend(_command_paths(sub, (*path, name)))
    return paths


PATHS = _command_paths(typer.main.get_command(app))


def test_the_walk_reaches_nested_commands() -> None:
    assert {("audit", "ship"), ("mcp", "token", "create"), ("runs", "show")} <= set(PATHS)


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(path) or "aifr")
def test_help_renders(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"})

    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_brackets_in_help_are_shown_as_written() -> None:
    # Rich markup read "[/STREAM]" as a closing tag and `aifr audit ship --help` crashed.
    result = CliRunner().invoke(app, ["audit", "ship", "--help"], env={"COLUMNS": "100"})

    assert "nats://HOST:PORT[/STREAM]" in result.output
