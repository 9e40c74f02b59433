"""Checked conversions from scanner JSON values to finding fields.

Every helper returns None (or an empty tuple) for a value of the wrong type instead of
raising, so one odd optional field never costs the whole record; the parsers keep such a
value in ``raw`` so nothing is lost.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

__all__ = [
    "as_float",
    "as_int",
    "as_str",
    "as_str_tuple",
    "parse_timestamp",
]


def as_str(value: object) -> str | None:
    """A non-empty string, else None."""
    return value if value.__class__ is str and value else None


def as_int(value: object) -> int | None:
    """An integer, or a string of digits, else None (booleans are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def as_float(value: object) -> float | None:
    """A finite number, or a numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def as_str_tuple(value: object, *, comma_separated: bool = False) -> tuple[str, ...]:
    """A list of strings (others dropped), or one string split on commas when allowed."""
    if isinstance(value, list):
        return tuple([item.strip() for item in value if isinstance(item, str) and item.strip()])
    if isinstance(value, str) and value.strip():
        if comma_separated:
            return tuple([part.strip() for part in value.split(",") if part.strip()])
        return (value.strip(),)
    return ()


def parse_timestamp(value: object) -> datetime | None:
    """RFC 3339 text (any fraction length, ``Z`` or an offset) or Unix seconds, as aware UTC-offset time.

    A naive timestamp is read as UTC: the scanners write UTC when they write no offset.
    """
    if isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None
