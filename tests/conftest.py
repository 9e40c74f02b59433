"""Shared fixtures: the installed ``aifr`` executable and fresh projects."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def aifr_bin() -> str:
    """Path of the installed ``aifr`` console script (the one a user runs)."""
    candidate = Path(sys.executable).parent / "aifr"
    found = str(candidate) if candidate.exists() else shutil.which("aifr")
    if not found:
        pytest.fail("the aifr console script is not installed; run `make test`")
    return found


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment without any AIFR_* settings leaking in from the caller."""
    for key in list(os.environ):
        if key.startswith("AIFR_") and key != "AIFR_TEST_PG_DSN":
            monkeypatch.delenv(key)
    return dict(os.environ)
