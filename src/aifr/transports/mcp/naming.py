"""The names tools are listed under: capability ids, or names every client accepts.

A tool is named after the capability id (``io.fs.read``), workflow
(``workflow.rotate-config``) or built-in (``aifr.approvals.status``) it stands for,
which MCP allows since 2025-11-25 (1 to 128 of ``A-Z a-z 0-9 _ - .``). Several widely
used clients are stricter: Claude Desktop checks every name against
``^[a-zA-Z0-9_-]{1,64}$`` and refuses the whole tool list when one name fails, and
clients that hand tools to a model API meet the same rule there. ``portable`` naming
lists each tool under such a name instead: every other character becomes ``_``
(``io_fs_read``), and a name that would be longer than 64 characters, or that two
tools would share, gets a short digest of its id so it stays unique and stable.

Either way a call may name the tool by its listed name or by its id, so the id
printed in an audit record, a policy rule or a pending-approval message always works.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from enum import StrEnum

__all__ = ["PORTABLE_NAME", "ToolNames", "ToolNaming", "portable_name"]

PORTABLE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""The tool names the strictest common clients accept (Claude Desktop's rule)."""

_NOT_PORTABLE = re.compile(r"[^A-Za-z0-9_-]")
_MAX_LENGTH = 64
_DIGEST_LENGTH = 8


class ToolNaming(StrEnum):
    """How tools are listed: by their ids, or under names every client accepts."""

    IDS = "ids"
    PORTABLE = "portable"


def _sanitized(tool_id: str) -> str:
    return _NOT_PORTABLE.sub("_", tool_id) or "_"


def _with_digest(tool_id: str, sanitized: str) -> str:
    digest = hashlib.sha256(tool_id.encode()).hexdigest()[:_DIGEST_LENGTH]
    return f"{sanitized[: _MAX_LENGTH - _DIGEST_LENGTH - 1]}_{digest}"


def portable_name(tool_id: str, *, shared: bool = False) -> str:
    """``tool_id`` as a name matching :data:`PORTABLE_NAME`.

    ``shared`` says another tool sanitizes to the same name, so a digest of the id
    tells them apart.
    """
    sanitized = _sanitized(tool_id)
    if shared or len(sanitized) > _MAX_LENGTH:
        return _with_digest(tool_id, sanitized)
    return sanitized


class ToolNames:
    """Listed name of every tool, and the tool id that a called name stands for."""

    def __init__(self, tool_ids: Iterable[str], naming: ToolNaming = ToolNaming.IDS) -> None:
        ids = list(dict.fromkeys(tool_ids))
        self.naming = naming
        if naming is ToolNaming.IDS:
            self._listed = {tool_id: tool_id for tool_id in ids}
        else:
            counts = Counter(_sanitized(tool_id) for tool_id in ids)
            self._listed = {
                tool_id: portable_name(tool_id, shared=counts[_sanitized(tool_id)] > 1)
                for tool_id in ids
            }
        self._ids = {name: tool_id for tool_id, name in self._listed.items()}
        self.ids: list[str] = ids

    def listed(self, tool_id: str) -> str:
        """The name ``tool_id`` is listed under (itself when it is not a known tool)."""
        return self._listed.get(tool_id, tool_id)

    def resolve(self, name: str) -> str:
        """The tool id a call to ``name`` means: a listed name, else ``name`` itself."""
        return self._ids.get(name, name)
