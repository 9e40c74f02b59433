"""Fixtures: a running ``aifr mcp`` over each transport for a fresh governed project."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp_harness import McpTarget, build_target, start


def _short_dir() -> Path:
    # AF_UNIX socket paths are limited to ~107 bytes; pytest's tmp paths can be longer.
    return Path(tempfile.mkdtemp(prefix="aifr-mcp-", dir="/tmp"))


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short folder for a Unix socket."""
    path = _short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module", params=["stdio", "http", "uds"])
def target(
    request: pytest.FixtureRequest, aifr_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[McpTarget]:
    """A running ``aifr mcp`` per transport, shared by a module's tests (operator: alice).

    Tests sharing it use distinct arguments (order ids) so their effects never mix.
    """
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AIFR_") or k == "AIFR_TEST_PG_DSN"
    }
    sockets = _short_dir()
    root = tmp_path_factory.mktemp(f"mcp-{request.param}")
    built = start(build_target(request.param, aifr_bin, root, env, sockets))
    yield built
    for server in built.servers:
        server.stop()
        print(server.stderr)  # shown by pytest when a test of this module failed
    shutil.rmtree(sockets, ignore_errors=True)
