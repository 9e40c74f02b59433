"""Strict JSON for inputs typed on the command line or read from ``--input-file``.

Python's ``json`` accepts more than JSON: ``NaN`` and ``Infinity``, a key repeated in one
object (the last one wins, silently), integers too long to turn back into text, and
nesting deep enough to raise ``RecursionError``. Each would reach the runtime as an
input and fail later and worse, or run with a value nobody meant; here each is refused
as bad input, with a reason that names it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import JsonValue

__all__ = ["MAX_INPUT_DEPTH", "JsonInputError", "loads_strict"]

MAX_INPUT_DEPTH = 100
"""Deepest nesting of objects and arrays an input may have (far beyond any real input)."""


class JsonInputError(ValueError):
    """Text that is no strict JSON; the message says why, for the caller's error."""


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JsonInputError(f"key {key!r} is given twice in one object")
        result[key] = value
    return result


def _no_constant(name: str) -> None:
    raise JsonInputError(f"{name} is not a JSON value")


def _check_values(value: JsonValue) -> None:
    """Refuse nesting past :data:`MAX_INPUT_DEPTH` and numbers beyond a float's range.

    ``1e999`` parses as infinity without passing through ``parse_constant``. The walk
    keeps its own stack, so no nesting the parser accepted can overflow it.
    """
    stack: list[tuple[JsonValue, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise JsonInputError("holds a number too large for a JSON number")
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_INPUT_DEPTH:
            raise JsonInputError(f"nests deeper than {MAX_INPUT_DEPTH} levels")
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)


def loads_strict(text: str) -> JsonValue:
    """Parse ``text`` as JSON, refusing what JSON itself does not allow.

    Raises:
        JsonInputError: ``text`` is not JSON, holds NaN or an infinity, repeats a key in
            one object, holds a number too large to handle, or nests too deeply.
    """
    try:
        value: JsonValue = json.loads(
            text, parse_constant=_no_constant, object_pairs_hook=_unique_object
        )
    except JsonInputError:
        raise
    except json.JSONDecodeError as exc:
        raise JsonInputError(exc.msg) from None
    except RecursionError:
        raise JsonInputError(f"nests deeper than {MAX_INPUT_DEPTH} levels") from None
    except ValueError:  # an integer longer than Python turns into text (4300 digits)
        raise JsonInputError("holds an integer too long to handle") from None
    _check_values(value)
    return value
