"""Logs, traces and metrics."""

from aifr.observability.logs import (
    ContextFilter,
    JsonLogFormatter,
    bind_log_fields,
    configure_logging,
    unbind_log_fields,
)

__all__ = [
    "ContextFilter",
    "JsonLogFormatter",
    "bind_log_fields",
    "configure_logging",
    "unbind_log_fields",
]
