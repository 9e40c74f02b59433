"""Options out of range are refused by the CLI with exit 2, before anything starts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from aifr.cli.main import app


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["mcp", "--transport", "http", "--port", "99999"], "--port"),
        (["mcp", "--transport", "http", "--port", "-1"], "--port"),
        (["worker", "--callback-port", "70000"], "--callback-port"),
        (["worker", "--poll", "-1"], "--poll"),
        (["runs", "list", "--limit", "-1"], "--limit"),
        (["approvals", "list", "--limit", "0"], "--limit"),
    ],
)
def test_an_out_of_range_option_is_refused_naming_it(args: list[str], option: str) -> None:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "40"})

    assert result.exit_code == 2, result.output
    assert option in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
