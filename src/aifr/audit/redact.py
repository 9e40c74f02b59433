"""The ledger's last redaction pass: secret-looking keys and values never reach a record.

Callers redact what they know to be secret (resolved ``secret://`` values); this pass
catches what slipped through: values under keys that name a secret (``password``,
``api_key``, ``authorization``...) and strings that look like credentials wherever they
appear (PEM private keys, bearer tokens, cloud and SaaS key formats, JWTs, passwords in
URLs). Anything it cannot tell apart from a secret is treated as one: redacting a
harmless value loses a detail, keeping a secret leaks it forever in an append-only log.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

from pydantic import JsonValue

__all__ = ["REDACTED", "is_secret_key", "redact_details", "redact_text"]

REDACTED = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"pass(?:word|wd|phrase)?$|^pwd$|secret|token|api[_-]?key|authori[sz]ation|credential"
    r"|private[_-]?key|cookie|session[_-]?(?:id|key)|access[_-]?key|signing[_-]?key|^auth$",
    re.IGNORECASE,
)

_SECRET_VALUE = re.compile(
    "|".join(
        (
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
            r"(?i:\b(?:bearer|basic|token)\s+)[A-Za-z0-9._~+/=-]{8,}",
            r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
            r"\bgh[pousr]_[A-Za-z0-9]{30,}",
            r"\bgithub_pat_[A-Za-z0-9_]{22,}",
            r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
            r"\bsk-[A-Za-z0-9_-]{20,}",
            r"\b[rs]k_live_[0-9A-Za-z]{16,}",
            r"\bAIza[0-9A-Za-z_-]{35}",
            r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
            r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)",
        )
    )
)


# The shortest credential any value pattern matches is 14 characters ("Bearer " and 8),
# except passwords in URLs, which need "://": shorter text is skipped without a regex.
_SHORTEST_SECRET = 14

# What every match of _SECRET_VALUE contains, one branch per pattern, each starting with
# a literal so the regex engine skips ahead by first character: on ASCII text it rules
# out a secret in a seventh of the time the full scan takes. Non-ASCII text always gets
# the full scan, whose case-insensitive part also matches letters such as the Kelvin sign.
_MAY_HOLD_SECRET = re.compile(
    r"://|-----BEGIN |AKIA|ASIA|gh|github_pat_|xox|sk-|k_live_|AIza|eyJ"
    r"|B(?i:earer)|b(?i:earer)|B(?i:asic)|b(?i:asic)|T(?i:oken)|t(?i:oken)"
)


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether a mapping key names a secret (``password``, ``client_secret``, ``Authorization``)."""
    return _SECRET_KEY.search(key) is not None


def redact_text(text: str) -> str:
    """``text`` with every credential-looking substring replaced by ``[REDACTED]``."""
    if len(text) < _SHORTEST_SECRET and "://" not in text:
        return text
    if text.isascii() and _MAY_HOLD_SECRET.search(text) is None:
        return text
    return _SECRET_VALUE.sub(REDACTED, text)


def _redact(value: JsonValue) -> JsonValue:
    """``value`` redacted; the very same object when nothing needed redacting."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        redacted = _redact_mapping(value)
        return value if redacted is value else dict(redacted)
    if isinstance(value, list):
        items = [_redact(item) for item in value]
        changed = any(new != old for new, old in zip(items, value, strict=True))
        return items if changed else value
    return value


def _redact_mapping(mapping: Mapping[str, JsonValue]) -> Mapping[str, JsonValue]:
    result: dict[str, JsonValue] | None = None
    for key, value in mapping.items():
        if is_secret_key(str(key)) and value is not None and not isinstance(value, bool):
            new: JsonValue = REDACTED
        else:
            new = _redact(value)
        if new is not value and new != value:
            if result is None:
                result = dict(mapping)
            result[key] = new
    return mapping if result is None else result


def redact_details(details: Mapping[str, JsonValue]) -> Mapping[str, JsonValue]:
    """``details`` with secret-looking keys and values redacted (same object if clean)."""
    return _redact_mapping(details)
