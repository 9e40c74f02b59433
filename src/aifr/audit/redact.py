"""The ledger's last redaction pass: secret-looking keys and values never reach a record.

Callers redact what they know to be secret (resolved ``secret://`` values); this pass
catches what slipped through: values under keys that name a secret (``password``,
``api_key``, ``authorization``...) and strings that look like credentials wherever they
appear, by the quick tier of the project's one detector (``aifr.redaction.scrub``).
Anything it cannot tell apart from a secret is treated as one: redacting a harmless
value loses a detail, keeping a secret leaks it forever in an append-only log.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import JsonValue

from aifr.redaction import is_secret_key, scrub

__all__ = ["REDACTED", "is_secret_key", "redact_details", "redact_text"]

REDACTED = "[REDACTED]"


def redact_text(text: str) -> str:
    """``text`` with every credential-looking substring replaced by its typed placeholder."""
    return scrub(text)


def _redact(value: JsonValue) -> JsonValue:
    """``value`` redacted; the very same object when nothing needed redacting."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        redacted = _redact_mapping(value)
        return value if redacted is value else dict(redacted)
    if isinstance(value, list):
        items = [_redact(item) for item in value]
        changed = any(new is not old for new, old in zip(items, value, strict=True))
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
