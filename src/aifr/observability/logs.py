"""Structured JSON logs; only the CLI and servers install the handler."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar, Token

__all__ = [
    "ContextFilter",
    "JsonLogFormatter",
    "bind_log_fields",
    "configure_logging",
    "unbind_log_fields",
]

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, with any ``extra=`` fields kept as keys."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        payload = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


_log_fields: ContextVar[Mapping[str, str] | None] = ContextVar("aifr_log_fields", default=None)


def bind_log_fields(**fields: str | None) -> Token[Mapping[str, str] | None]:
    """Stamp ``fields`` (request id, trace id, principal, run id) on records logged from here.

    Holds for this thread or task until :func:`unbind_log_fields` gets the token back;
    ``None`` values are left out.
    """
    return _log_fields.set({k: v for k, v in fields.items() if v is not None})


def unbind_log_fields(token: Token[Mapping[str, str] | None]) -> None:
    """Restore the fields bound before the matching :func:`bind_log_fields`."""
    _log_fields.reset(token)


class ContextFilter(logging.Filter):
    """Adds the fields bound by :func:`bind_log_fields` to each record (never overrides)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Stamp the record; always keeps it."""
        fields = _log_fields.get()
        if fields:
            for key, value in fields.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        return True


def configure_logging(level: str = "WARNING") -> None:
    """Send the ``aifr`` logger's records to stderr as JSON lines, stamped with context."""
    logger = logging.getLogger("aifr")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    handler.addFilter(ContextFilter())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
