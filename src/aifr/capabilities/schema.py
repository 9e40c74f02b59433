"""Input and output validation with structured errors (seed 002's GType diagnostics).

Both pydantic (for decorated Python handlers) and JSON Schema (for specs declared as
data) report problems as :class:`~aifr.errors.FieldError` with the same short codes:
``required``, ``type``, ``min``, ``max``, ``length``, ``pattern``, ``email``, ``url``,
``uuid``, ``enum``, ``unexpected``, ``invalid``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import ErrorDetails

if TYPE_CHECKING:
    import jsonschema

__all__ = [
    "field_errors_from_jsonschema",
    "field_errors_from_pydantic",
    "json_safe",
    "validate_against_schema",
]

_PYDANTIC_CODES = {
    "missing": "required",
    "missing_argument": "required",
    "greater_than": "min",
    "greater_than_equal": "min",
    "less_than": "max",
    "less_than_equal": "max",
    "string_too_short": "length",
    "string_too_long": "length",
    "too_short": "length",
    "too_long": "length",
    "string_pattern_mismatch": "pattern",
    "url_parsing": "url",
    "url_type": "url",
    "url_scheme": "url",
    "url_syntax_violation": "url",
    "uuid_parsing": "uuid",
    "uuid_type": "uuid",
    "uuid_version": "uuid",
    "extra_forbidden": "unexpected",
    "unexpected_keyword_argument": "unexpected",
    "enum": "enum",
    "literal_error": "enum",
    "multiple_of": "multiple_of",
}
_PYDANTIC_EXPECTED_KEYS = (
    "ge",
    "gt",
    "le",
    "lt",
    "min_length",
    "max_length",
    "pattern",
    "expected",
)

_JSONSCHEMA_CODES = {
    "required": "required",
    "type": "type",
    "minimum": "min",
    "exclusiveMinimum": "min",
    "maximum": "max",
    "exclusiveMaximum": "max",
    "minLength": "length",
    "maxLength": "length",
    "minItems": "length",
    "maxItems": "length",
    "pattern": "pattern",
    "enum": "enum",
    "const": "enum",
    "additionalProperties": "unexpected",
    "multipleOf": "multiple_of",
}
_FORMAT_CODES = {"email": "email", "uri": "url", "url": "url", "uuid": "uuid"}
_MAX_RECEIVED_CHARS = 200
_MAX_RECEIVED_DEPTH = 8
_MAX_RECEIVED_INT_BITS = 4096  # str() of an int refuses over 4300 digits (about 14,000 bits)


def json_safe(value: Any) -> JsonValue:
    """A JSON-safe, size-bounded echo of a received value for error reports.

    The echo lands in the audit record of the refused call, whose canonical JSON admits
    no NaN or infinity and whose encoder recurses: a received NaN is echoed as text and
    nesting is cut at a few levels, so a hostile value is refused and audited like any
    other instead of failing the audit (or the process) while being reported.
    """
    return _echo(value, _MAX_RECEIVED_DEPTH)


def _echo(value: Any, depth: int) -> JsonValue:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= _MAX_RECEIVED_INT_BITS else "<large integer>"
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return _clip(value)
    if isinstance(value, Mapping | list | tuple) and depth <= 0:
        return "..."
    if isinstance(value, Mapping):
        return {_clip(str(k)): _echo(v, depth - 1) for k, v in list(value.items())[:20]}
    if isinstance(value, list | tuple):
        return [_echo(v, depth - 1) for v in list(value)[:20]]
    return _clip(repr(value))


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_RECEIVED_CHARS else text[:_MAX_RECEIVED_CHARS] + "..."


def _dotted(loc: Iterable[Any]) -> str:
    return ".".join(str(part) for part in loc)


def _pydantic_code(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind in _PYDANTIC_CODES:
        return _PYDANTIC_CODES[kind]
    if kind == "value_error" and "email address" in error["msg"]:
        return "email"
    if kind.endswith(("_type", "_parsing")):
        return "type"
    return "invalid"


def field_errors_from_pydantic(exc: PydanticValidationError) -> list[dict[str, JsonValue]]:
    """Translate pydantic's errors into aifr's {path, code, message, expected, received}."""
    results: list[dict[str, JsonValue]] = []
    for error in exc.errors(include_url=False):
        ctx = error.get("ctx") or {}
        expected: JsonValue = None
        for key in _PYDANTIC_EXPECTED_KEYS:
            if key in ctx:
                expected = json_safe(ctx[key]) if key == "expected" else {key: json_safe(ctx[key])}
                break
        code = _pydantic_code(error)
        received = None if code == "required" else json_safe(error.get("input"))
        results.append(
            {
                "path": _dotted(error["loc"]),
                "code": code,
                "message": error["msg"],
                "expected": expected,
                "received": received,
            }
        )
    return results


def _jsonschema_code(error: jsonschema.ValidationError) -> str:
    if error.validator == "format":
        return _FORMAT_CODES.get(str(error.validator_value), "format")
    return _JSONSCHEMA_CODES.get(str(error.validator), "invalid")


def field_errors_from_jsonschema(
    errors: Iterable[jsonschema.ValidationError],
) -> list[dict[str, JsonValue]]:
    """Translate jsonschema errors into aifr's structured form."""
    results: list[dict[str, JsonValue]] = []
    for error in sorted(errors, key=lambda e: list(map(str, e.absolute_path))):
        path = list(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, Mapping):
            missing = [k for k in error.validator_value if k not in error.instance]
            path += missing[:1]
        code = _jsonschema_code(error)
        results.append(
            {
                "path": _dotted(path),
                "code": code,
                "message": error.message if code != "required" else "Field required",
                "expected": json_safe(error.validator_value),
                "received": None if code == "required" else json_safe(error.instance),
            }
        )
    return results


_COMPILED: dict[int, tuple[Mapping[str, Any], Any]] = {}
_COMPILED_MAX = 4096


def _validator(schema: Mapping[str, Any]) -> Any:
    """The jsonschema validator of ``schema``, built once per schema object.

    Keyed by the object's identity (a spec's schema is one object for its life, and the
    cache holds it, so its id is never reused while cached); an equal schema built anew
    gets a validator of its own. Validators are safe to share across threads.
    """
    cached = _COMPILED.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    import jsonschema  # deferred: its format checkers cost ~0.8 s to import

    validator_cls = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator
    )
    validator = validator_cls(schema, format_checker=_format_checker(validator_cls))
    if len(_COMPILED) >= _COMPILED_MAX:  # schemas made per call: keep the cache bounded
        _COMPILED.clear()
    _COMPILED[id(schema)] = (schema, validator)
    return validator


def validate_against_schema(instance: Any, schema: Mapping[str, Any]) -> list[dict[str, JsonValue]]:
    """Validate ``instance`` against a JSON Schema (2020-12), formats checked.

    The validator is compiled on the first use of ``schema`` and reused (a gateway
    upstream tool's input schema is validated against on every call).
    """
    return field_errors_from_jsonschema(_validator(schema).iter_errors(instance))


@functools.cache
def _format_checker(validator_cls: Any) -> jsonschema.FormatChecker:
    """The draft's format checker, plus ``url`` checked as ``uri`` (built once per draft).

    ``url`` is not a JSON Schema format, so jsonschema would pass any string; specs
    written by hand use it, and the error code ``url`` promises a check.
    """
    import jsonschema  # deferred, as above

    draft: jsonschema.FormatChecker = validator_cls.FORMAT_CHECKER
    if "url" in draft.checkers or "uri" not in draft.checkers:
        return draft
    checker = jsonschema.FormatChecker(list(draft.checkers))
    function, raises = draft.checkers["uri"]
    checker.checks("url", raises)(function)
    return checker
