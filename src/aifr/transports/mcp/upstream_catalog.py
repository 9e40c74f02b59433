"""What an upstream listed when it was last reviewed: its tools, kept so it can start lazily.

``aifr upstreams list`` (and the first ``aifr mcp`` that meets an upstream) writes the
server's identity and tool list to ``<state>/upstreams/<name>.json``. Later starts of
``aifr mcp`` serve the tools from that file without starting the server; the first call
starts it. When the live tool list differs from the file (a tool's input schema changed,
or a tool appeared or vanished), the tools that changed are *drifted*: their calls are
refused with ``transport.upstream_drift`` until someone reviews the new list with
``aifr upstreams list``, which writes the file again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import mcp_types as types
from pydantic import ValidationError

from aifr.errors import ErrorCode, TransportError

__all__ = ["Catalog", "changed_tools", "load_catalog", "save_catalog", "schema_digests"]


@dataclass(frozen=True)
class Catalog:
    """An upstream's identity and tools as last reviewed."""

    server: types.Implementation | None
    tools: list[types.Tool]


def schema_digests(tools: list[types.Tool]) -> dict[str, str]:
    """Each tool's name and a digest of its input schema."""
    return {
        tool.name: hashlib.sha256(
            json.dumps(tool.input_schema, sort_keys=True, default=str).encode()
        ).hexdigest()
        for tool in tools
    }


def changed_tools(reviewed: list[types.Tool], live: list[types.Tool]) -> frozenset[str]:
    """The tools added, removed or with another input schema since the review."""
    before, now = schema_digests(reviewed), schema_digests(live)
    return frozenset(
        name for name in before.keys() | now.keys() if before.get(name) != now.get(name)
    )


def load_catalog(path: Path) -> Catalog | None:
    """The catalog in ``path``, or ``None`` when there is none yet.

    Raises:
        TransportError: the file exists but is not a catalog (its path in the message).
    """
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise TransportError(
            f"{path}: cannot read the upstream's tool list ({exc}); delete it and run "
            "'aifr upstreams list'",
            code=ErrorCode.TRANSPORT_FAILED,
            file=str(path),
        ) from exc
    try:
        server = body.get("server")
        return Catalog(
            server=types.Implementation.model_validate(server) if server else None,
            tools=[types.Tool.model_validate(tool) for tool in body["tools"]],
        )
    except (ValidationError, KeyError, TypeError, AttributeError) as exc:
        raise TransportError(
            f"{path}: not an upstream tool list; delete it and run 'aifr upstreams list'",
            code=ErrorCode.TRANSPORT_FAILED,
            file=str(path),
        ) from exc


def save_catalog(path: Path, server: types.Implementation | None, tools: list[types.Tool]) -> None:
    """Write the reviewed tool list atomically (a crash leaves the old file or the new)."""
    body = {
        "server": server.model_dump(mode="json", by_alias=True, exclude_none=True)
        if server is not None
        else None,
        "tools": [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(body, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(partial, path)
