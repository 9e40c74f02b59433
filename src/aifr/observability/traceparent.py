"""W3C ``traceparent`` headers: how a caller's trace is continued.

``00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>``. A value that does not
parse is ignored, as the W3C Trace Context recommendation asks: the call starts a trace
of its own instead of failing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["TraceParent", "format_traceparent", "parse_traceparent"]

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_INVALID_TRACE = "0" * 32
_INVALID_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A parsed ``traceparent``: the trace to join, the caller's span, whether it is sampled."""

    trace_id: str
    span_id: str
    is_sampled: bool


def parse_traceparent(value: str | None) -> TraceParent | None:
    """``value`` parsed, or ``None`` when it is absent or malformed."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == _INVALID_TRACE or span_id == _INVALID_SPAN:
        return None
    return TraceParent(trace_id, span_id, is_sampled=bool(int(flags, 16) & 1))


def format_traceparent(trace_id: str, span_id: str, *, is_sampled: bool = True) -> str:
    """The ``traceparent`` value that continues ``trace_id`` under ``span_id``."""
    return f"00-{trace_id}-{span_id}-{'01' if is_sampled else '00'}"
