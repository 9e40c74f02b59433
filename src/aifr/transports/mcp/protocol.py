"""What each negotiated MCP protocol version defines, so older clients get only that.

The SDK serializes one model for every protocol version. Fields that a later revision
of the protocol added therefore reach a client that negotiated an earlier one, which
its schema does not define: an output schema it cannot use, ``structuredContent`` it
ignores while it reads the text. The issue asks for output schemas "where the protocol
version supports them", so listings and results are cut down to the client's version:

- 2025-03-26 added tool annotations;
- 2025-06-18 added a tool's ``title``, ``outputSchema`` and ``_meta``, and a result's
  ``structuredContent``.

Nothing is lost by the cut: a successful result always carries its output as JSON text
too (see :mod:`.results`), and the risk and operation stay in the tool description.
A version that is not a date (a draft revision) counts as the newest.
"""

from __future__ import annotations

import re

import mcp_types as types

__all__ = [
    "ANNOTATIONS_SINCE",
    "STRUCTURED_OUTPUT_SINCE",
    "result_for_version",
    "supports",
    "tool_for_version",
]

ANNOTATIONS_SINCE = "2025-03-26"
STRUCTURED_OUTPUT_SINCE = "2025-06-18"
_DATED = re.compile(r"\d{4}-\d{2}-\d{2}")


def supports(protocol_version: str, since: str) -> bool:
    """Whether ``protocol_version`` is ``since`` or later (a draft is always later)."""
    if not _DATED.fullmatch(protocol_version):
        return True
    return protocol_version >= since


def tool_for_version(tool: types.Tool, protocol_version: str) -> types.Tool:
    """``tool`` without the fields ``protocol_version`` does not define."""
    if supports(protocol_version, STRUCTURED_OUTPUT_SINCE):
        return tool
    removed: dict[str, None] = {"title": None, "output_schema": None, "meta": None}
    if not supports(protocol_version, ANNOTATIONS_SINCE):
        removed["annotations"] = None
    return tool.model_copy(update=removed)


def result_for_version(result: types.CallToolResult, protocol_version: str) -> types.CallToolResult:
    """``result`` without ``structuredContent`` where ``protocol_version`` predates it."""
    if result.structured_content is None or supports(protocol_version, STRUCTURED_OUTPUT_SINCE):
        return result
    return result.model_copy(update={"structured_content": None})
