"""Fixtures: a fresh governed runtime per test (see ``invocation_env``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from invocation_env import Env, build_env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    built = build_env(tmp_path)
    yield built
    built.calls.release.set()
    built.runtime.close()
    built.database.close()
