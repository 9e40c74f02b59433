"""Fixtures: a fresh workflow engine per test (see ``wf_env``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from wf_env import WfEnv, build_wf_env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[WfEnv]:
    built = build_wf_env(tmp_path)
    yield built
    built.close()
