"""Startup cost: what an ``aifr`` process imports before it does anything.

Cold start to the first MCP call is a goal of issue 8, and imports are most of it. The
heavy libraries only some commands need (httpx for ``io.net`` and audit shipping,
Starlette and uvicorn for the worker's callback, Jinja2 for workflow templates) load
when first used.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, sys
from aifr.app import build_app
from aifr.cli.main import app as cli
from aifr.transports.mcp import AifrMcpServer, McpIdentity, fixed_identity

app = build_app(sys.argv[1])
AifrMcpServer.from_app(app, identity=fixed_identity(McpIdentity(principal="local")))
print(json.dumps(sorted(m for m in ("httpx", "jinja2", "aifr.audit.sinks",
                                    "aifr.workflows.notify", "aifr.stdlib.net_fetch",
                                    "torch", "sentence_transformers", "numpy", "usearch",
                                    "bm25s", "aifr.ingest.search")
                         if m in sys.modules)))
"""


def _python(script: str, *args: str) -> str:
    """What a fresh interpreter running ``script`` prints (its own imports, not ours)."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout


def _loaded_at_startup(project: Path) -> list[str]:
    return json.loads(_python(PROBE, str(project)).strip().splitlines()[-1])


def test_serving_and_the_cli_do_not_import_what_only_some_commands_need(tmp_path: Path) -> None:
    from aifr.config import init_project

    init_project(tmp_path)
    assert _loaded_at_startup(tmp_path) == []


def test_the_net_capabilities_load_httpx_on_their_first_request(tmp_path: Path) -> None:
    script = """
import sys
from aifr.app import build_app
app = build_app(sys.argv[1])
assert "httpx" not in sys.modules
result = app.runtime.invoke("io.net.http_get", {"url": "ftp://example.com/"}, "alice")
print(result.status.value, "httpx" in sys.modules)
"""
    from aifr.config import init_project

    init_project(tmp_path)
    status, loaded = _python(script, str(tmp_path)).split()
    assert loaded == "True"
    assert status in {"denied", "failed"}


def test_jinja2_loads_with_the_first_template_checked(tmp_path: Path) -> None:
    script = """
import sys
from aifr.workflows import WorkflowBuilder
plain = WorkflowBuilder("plain").step("a", "x.y", n=1).build()
before = "jinja2" in sys.modules
templated = WorkflowBuilder("t").input("n", "integer").step("a", "x.y", n="{{ inputs.n }}").build()
print(before, "jinja2" in sys.modules)
"""
    assert _python(script).split() == ["False", "True"]
