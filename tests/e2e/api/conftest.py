"""Fixtures: one ``aifr serve`` per module over a fresh governed project, and its tokens."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from api_harness import WEBHOOK_SECRET, Server, make_project, mint, start_server


@pytest.fixture(scope="module")
def api_env() -> dict[str, str]:
    """The environment without AIFR_* settings leaking in from the caller."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("AIFR_") or k == "AIFR_TEST_PG_DSN"
    }


@pytest.fixture(scope="module")
def server(
    aifr_bin: str, tmp_path_factory: pytest.TempPathFactory, api_env: dict[str, str]
) -> Iterator[Server]:
    """A running ``aifr serve`` with tokens for agent, alice (approver), bob and outsider."""
    project = make_project(aifr_bin, tmp_path_factory.mktemp("api"), api_env)
    tokens = {
        who: mint(aifr_bin, project, api_env, who)
        for who in ("agent", "alice", "bob", "carol", "sam", "outsider")
    }
    signed = {**api_env, "AIFR_APPROVALS__WEBHOOK_SECRET": WEBHOOK_SECRET}
    running = start_server(aifr_bin, project, signed)
    running.tokens = tokens
    yield running
    running.stop()
    print(running.stderr)  # shown by pytest when a test of this module failed
