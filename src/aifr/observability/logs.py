"""Structured JSON logs; only the CLI and servers install the handler.

Records are stamped with the current call's fields (request id, trace id, principal) and
scrubbed of the secrets the current call resolved: a handler is given a secret's value,
and a log line of its own (``log.warning("using %s", token)``) must not print it. Every
record also goes through the quick tier of the project's secret detector, so a URL is
logged as ``user:***@host/?token=***``, the same as in errors and audit details.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token

from aifr.redaction import is_secret_key
from aifr.redaction import scrub as scrub_secrets

__all__ = [
    "ContextFilter",
    "JsonLogFormatter",
    "bind_log_fields",
    "bind_log_scrubber",
    "configure_logging",
    "unbind_log_fields",
    "unbind_log_scrubber",
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
        if record.exc_text:  # already rendered (and scrubbed) by ContextFilter
            payload["exc"] = record.exc_text
        elif record.exc_info:
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


Scrubber = Callable[[str], str]
_log_scrubber: ContextVar[Scrubber | None] = ContextVar("aifr_log_scrubber", default=None)


def bind_log_scrubber(scrub: Scrubber) -> Token[Scrubber | None]:
    """Scrub records logged from here (a call's handler) with ``scrub`` until unbound."""
    return _log_scrubber.set(scrub)


def unbind_log_scrubber(token: Token[Scrubber | None]) -> None:
    """Restore the scrubber bound before the matching :func:`bind_log_scrubber`."""
    _log_scrubber.reset(token)


class ContextFilter(logging.Filter):
    """Stamps and scrubs each record.

    Adds the fields bound by :func:`bind_log_fields` (never overriding the record's
    own), and scrubs the message, the traceback and every ``extra=`` field of
    credential-looking text (``aifr.redaction.scrub``) and with the scrubber bound by
    :func:`bind_log_scrubber`. An ``extra=`` field whose name marks a secret
    (``password``, ``api_key``, ``authorization``) is logged as ``***`` whatever it holds.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Stamp and scrub the record; always keeps it."""
        fields = _log_fields.get()
        if fields:
            for key, value in fields.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        bound = _log_scrubber.get()
        _scrub(record, scrub_secrets if bound is None else lambda text: bound(scrub_secrets(text)))
        return True


def _scrub(record: logging.LogRecord, scrub: Scrubber) -> None:
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # arguments that do not fit: logging reports it
        return
    cleaned = scrub(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = scrub(record.exc_text)
    for key in [k for k in vars(record) if k not in _STANDARD]:
        value = getattr(record, key)
        setattr(record, key, SECRET_MARK if is_secret_key(key) else _clean(value, scrub))


SECRET_MARK = "***"  # noqa: S105  # the mask shown in place of a secret, not one
"""What an ``extra=`` field named like a secret (``password=``) is logged as."""


def _clean(value: object, scrub: Scrubber) -> object:
    """``value`` with its strings scrubbed, and secret-named keys masked, at any depth."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {
            k: SECRET_MARK if isinstance(k, str) and is_secret_key(k) else _clean(v, scrub)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_clean(item, scrub) for item in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return scrub(str(value))


_HANDLER_MARK = "_aifr_json_handler"


def configure_logging(level: str = "WARNING") -> None:
    """Send log records to stderr as JSON lines, stamped with context and scrubbed.

    The ``aifr`` logger logs at ``level``. Every other logger (a capability module's
    own, libraries') keeps the root logger's level and goes through the same handler,
    so what a handler logs carries its request id and never a secret it was given.
    Calling it again replaces the handler rather than adding a second one.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    handler.addFilter(ContextFilter())
    setattr(handler, _HANDLER_MARK, True)
    logging.getLogger("aifr").setLevel(level)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, _HANDLER_MARK, False)]
    root.addHandler(handler)
