"""Logs, traces and metrics."""

from aifr.observability.logs import (
    ContextFilter,
    JsonLogFormatter,
    bind_log_fields,
    bind_log_scrubber,
    configure_logging,
    unbind_log_fields,
    unbind_log_scrubber,
)

__all__ = [
    "ContextFilter",
    "JsonLogFormatter",
    "bind_log_fields",
    "bind_log_scrubber",
    "configure_logging",
    "unbind_log_fields",
    "unbind_log_scrubber",
]
