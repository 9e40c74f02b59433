"""``data.*``: parse JSON and CSV, query with JMESPath, transform by a declarative mapping.

All four are pure READ capabilities (LOW). ``data.transform`` never evaluates code: a
mapping's string leaves are JMESPath expressions, nested objects nest the output, and
``{"$literal": value}`` inserts a constant.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import JsonValue
from typing_extensions import TypedDict

from aifr.capabilities import Capability, capability
from aifr.errors import ExecutionError, FieldError, InputValidationError
from aifr.stdlib.limits import Positive, too_large

__all__ = ["build_data_capabilities"]

_LITERAL = "$literal"
_MAX_MAPPING_DEPTH = 32


class Parsed(TypedDict):
    """What ``data.json.parse`` returns."""

    value: JsonValue


class Table(TypedDict):
    """What ``data.csv.parse`` returns; rows are objects when the first line is a header."""

    columns: list[str]
    rows: list[JsonValue]
    truncated: bool


class Queried(TypedDict):
    """What ``data.query`` returns."""

    result: JsonValue


def _bad(path: str, code: str, message: str, received: JsonValue) -> InputValidationError:
    return InputValidationError(
        f"{path}: {message}",
        errors=[FieldError(path=path, code=code, message=message, received=received)],
    )


def _check_size(text: str, limit: int) -> None:
    size = len(text.encode())
    if size > limit:
        raise too_large("input_too_large", "text", size, limit)


def _compile(expression: str, path: str) -> Any:
    try:
        return jmespath.compile(expression)
    except JMESPathError as exc:
        raise _bad(path, "expression", f"invalid JMESPath expression: {exc}", expression) from None


def _search(compiled: Any, data: JsonValue, path: str) -> JsonValue:
    try:
        result: JsonValue = compiled.search(data)
    except JMESPathError as exc:  # unknown function, wrong arity or argument types
        raise _bad(path, "expression", f"query failed: {exc}", str(compiled.expression)) from None
    return result


def _apply_mapping(mapping: JsonValue, item: JsonValue, path: str, depth: int) -> JsonValue:
    if depth > _MAX_MAPPING_DEPTH:
        raise _bad(path, "depth", f"mapping nests deeper than {_MAX_MAPPING_DEPTH}", None)
    if isinstance(mapping, str):
        return _search(_compile(mapping, path), item, path)
    if isinstance(mapping, dict):
        if set(mapping) == {_LITERAL}:
            return mapping[_LITERAL]
        return {
            key: _apply_mapping(value, item, f"{path}.{key}", depth + 1)
            for key, value in mapping.items()
        }
    raise _bad(
        path,
        "type",
        'a mapping leaf must be a JMESPath string, an object, or {"$literal": value}',
        mapping,
    )


def build_data_capabilities(*, max_input_bytes: int) -> list[Capability]:
    """The ``data.*`` capabilities; text inputs larger than ``max_input_bytes`` are refused."""
    return [*_parsers(max_input_bytes), *_queries()]


def _parsers(max_input_bytes: int) -> list[Capability]:

    @capability(
        "data.json.parse",
        operation="READ",
        risk="LOW",
        idempotent=True,
        tags=("stdlib", "data"),
        justification="pure computation",
    )
    def parse_json(text: str) -> Parsed:
        """Parse JSON text into a value.

        Args:
            text: The JSON document.
        """
        _check_size(text, max_input_bytes)
        try:
            value: JsonValue = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _bad(
                "text",
                "json",
                f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                text[:80],
            ) from None
        except RecursionError:
            raise _bad("text", "depth", "the JSON nests too deeply", text[:80]) from None
        return Parsed(value=value)

    @capability(
        "data.csv.parse",
        operation="READ",
        risk="LOW",
        idempotent=True,
        tags=("stdlib", "data"),
        justification="pure computation",
    )
    def parse_csv(
        text: str, delimiter: str = ",", header: bool = True, max_rows: Positive = 10_000
    ) -> Table:
        """Parse CSV text into rows (objects keyed by the header, or lists).

        Args:
            text: The CSV document.
            delimiter: One-character field separator.
            header: Whether the first line names the columns.
            max_rows: At most this many rows are returned.
        """
        _check_size(text, max_input_bytes)
        if len(delimiter) != 1:
            raise _bad("delimiter", "length", "must be exactly one character", delimiter)
        try:
            lines = list(
                csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
            )
        except csv.Error as exc:
            raise _bad("text", "csv", f"not CSV: {exc}", text[:80]) from None
        columns = lines.pop(0) if header and lines else []
        rows: list[JsonValue] = []
        for line in lines[: max(0, max_rows)]:
            if header:
                rows.append(
                    {name: (line[i] if i < len(line) else None) for i, name in enumerate(columns)}
                )
            else:
                rows.append(list(line))
        return Table(columns=columns, rows=rows, truncated=len(lines) > len(rows))

    return [parse_json, parse_csv]


def _queries() -> list[Capability]:

    @capability(
        "data.query",
        operation="READ",
        risk="LOW",
        idempotent=True,
        tags=("stdlib", "data"),
        justification="pure computation",
    )
    def query(data: JsonValue, expression: str) -> Queried:
        """Select from a JSON value with a JMESPath expression.

        Args:
            data: The value to query.
            expression: A JMESPath expression such as ``items[?price > `10`].name``.
        """
        return Queried(result=_search(_compile(expression, "expression"), data, "expression"))

    @capability(
        "data.transform",
        operation="READ",
        risk="LOW",
        idempotent=True,
        tags=("stdlib", "data"),
        justification="pure computation; mappings are JMESPath, never code",
    )
    def transform(
        data: JsonValue, mapping: dict[str, JsonValue], for_each: str | None = None
    ) -> Queried:
        """Reshape a JSON value by a declarative mapping (no code is evaluated).

        Args:
            data: The value to transform.
            mapping: Output keys to JMESPath strings, nested objects, or ``{"$literal": v}``.
            for_each: A JMESPath expression selecting a list; the mapping applies to each item.
        """
        if for_each is None:
            return Queried(result=_apply_mapping(mapping, data, "mapping", 0))
        items = _search(_compile(for_each, "for_each"), data, "for_each")
        if not isinstance(items, list):
            raise ExecutionError(
                f"for_each selected a {type(items).__name__}, not a list", path="for_each"
            )
        return Queried(result=[_apply_mapping(mapping, item, "mapping", 0) for item in items])

    return [query, transform]
