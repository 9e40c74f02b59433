"""The crash harness's ``--kills N`` option (also ``AIFR_CRASH_KILLS``); default 50."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kills",
        type=int,
        default=None,
        help="kill points for tests/crash (default: AIFR_CRASH_KILLS or 50)",
    )


def kill_budget(config: pytest.Config) -> int:
    """How many kill points the harness should run in total."""
    value = config.getoption("--kills", default=None)
    if value is None:
        value = int(os.environ.get("AIFR_CRASH_KILLS", "50"))
    return int(value)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "scenario" in metafunc.fixturenames:
        scenarios = max(1, kill_budget(metafunc.config) // 5)
        metafunc.parametrize("scenario", range(scenarios))
