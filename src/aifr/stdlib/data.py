"""``data.*``: parse JSON and CSV, query with JMESPath, transform by a declarative mapping.

All four are pure READ capabilities (LOW). ``data.transform`` never evaluates code: a
mapping's string leaves are JMESPath expressions, nested objects nest the output, and
``{"$literal": value}`` inserts a constant.

JMESPath has no loops, but a short expression can still double a value at every step
(``[@, @] | [@, @] | ...`` shares, ``[@, @][]`` and ``join`` copy), so a few dozen
characters would ask for 2**40 elements. Every value an expression builds is measured
(as the JSON tree it stands for, shared parts counted each time they appear) and the
query is refused once one passes the cap, before anything larger is built from it.
The number of expression nodes evaluated is capped too (twice the same cap), so
projecting over a large value again and again cannot run on for hours either.
"""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.visitor import TreeInterpreter
from pydantic import JsonValue
from typing_extensions import TypedDict

from aifr.capabilities import Capability, capability
from aifr.errors import ExecutionError, FieldError, InputValidationError, SandboxRefusalError
from aifr.stdlib.limits import Positive, too_large

if TYPE_CHECKING:
    from jmespath.visitor import _TreeNode

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
    """What ``data.query`` and ``data.transform`` return."""

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


class _NotJson(Exception):  # noqa: N818  # internal signal, translated in parse_json
    """A token Python's parser accepts that JSON does not (NaN, Infinity, 1e999)."""


def _refuse_constant(name: str) -> float:
    raise _NotJson(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise _NotJson(f"{text[:40]} does not fit a double")
    return number


_JSON_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
"""``data.json.parse``'s decoder, built once: ``json.loads`` with hooks builds one per call."""
_BOM = "\ufeff"


def _decode_json(text: str) -> JsonValue:
    """``json.loads(text)`` with the hooks above, through :data:`_JSON_DECODER`.

    Raises:
        json.JSONDecodeError: not JSON, or a byte-order mark first (as ``json.loads`` says).
        _NotJson: NaN, an infinity or a number past a double.
    """
    if text.startswith(_BOM):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    value: JsonValue = _JSON_DECODER.decode(text)
    return value


def _compile(expression: str, path: str) -> Any:
    try:
        return jmespath.compile(expression)
    except JMESPathError as exc:
        raise _bad(path, "expression", f"invalid JMESPath expression: {exc}", expression) from None
    except RecursionError:
        raise _bad(path, "depth", "the expression nests too deeply", expression[:80]) from None


class _QueryTooLarge(Exception):  # noqa: N818  # internal signal, translated in _Budget.search
    """A value an expression built passed the budget's cap."""


class _Budget:
    """The cap on what the expressions of one call may build, shared by all of them.

    ``size`` counts a value as the JSON tree it stands for: one per node plus the length
    of each string and key, with a list that appears twice counted twice. Sizes of
    lists and objects are remembered by identity (the objects are kept alive for it),
    so measuring a value built from shared parts costs only its new nodes.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spent = 0
        self.steps = 0
        self._sizes: dict[int, tuple[object, int]] = {}

    def size(self, value: object) -> int:
        if isinstance(value, str):
            return 1 + len(value)
        if not isinstance(value, list | dict):
            return 1
        known = self._sizes.get(id(value))
        if known is not None:
            return known[1]
        if isinstance(value, list):
            total = 1 + sum(self.size(item) for item in value)
        else:
            total = 1 + sum(1 + len(k) + self.size(v) for k, v in value.items())
        self._sizes[id(value)] = (value, total)
        return total

    def check(self, value: object) -> int:
        """The size of ``value``, which must be within the cap."""
        size = self.size(value)
        if size > self.limit:
            raise _QueryTooLarge
        return size

    def search(self, compiled: Any, data: JsonValue, path: str, *, output: bool) -> JsonValue:
        """Run ``compiled`` over ``data``, refusing it once a value it builds passes the cap.

        With ``output`` the result is part of the call's output, and all of those
        together must stay within the cap too.

        Raises:
            InputValidationError: the expression fails (arity, types) or nests too deeply.
            SandboxRefusalError: ``query_too_large``.
        """
        interpreter = _BoundedInterpreter(self)
        try:
            result: JsonValue = interpreter.visit(compiled.parsed, data)
            if output:
                self.spent += self.check(result)
                if self.spent > self.limit:
                    raise _QueryTooLarge
        except JMESPathError as exc:  # unknown function, wrong arity or argument types
            raise _bad(path, "expression", f"query failed: {exc}", compiled.expression) from None
        except RecursionError:
            raise _bad(path, "depth", "the query nests too deeply", compiled.expression) from None
        except _QueryTooLarge:
            raise SandboxRefusalError(
                f"{path}: the expression builds a value larger than the cap of {self.limit} "
                f"(JSON nodes plus string characters) or takes more than {2 * self.limit} "
                "steps; it is not run further",
                rule="query_too_large",
                path=path,
                expression=compiled.expression,
                limit=self.limit,
            ) from None
        return result


class _BoundedInterpreter(TreeInterpreter):
    """jmespath's interpreter, measuring each value a node returns against a budget."""

    def __init__(self, budget: _Budget) -> None:
        super().__init__()
        self._budget = budget

    def visit(self, node: _TreeNode, *args: Any, **kwargs: Any) -> Any:
        budget = self._budget
        budget.steps += 1
        if budget.steps > 2 * budget.limit:
            raise _QueryTooLarge
        result = super().visit(node, *args, **kwargs)
        budget.check(result)
        return result


def _search(
    compiled: Any, data: JsonValue, path: str, budget: _Budget, *, output: bool = True
) -> JsonValue:
    return budget.search(compiled, data, path, output=output)


def _apply_mapping(
    mapping: JsonValue, item: JsonValue, path: str, depth: int, budget: _Budget
) -> JsonValue:
    if depth > _MAX_MAPPING_DEPTH:
        raise _bad(path, "depth", f"mapping nests deeper than {_MAX_MAPPING_DEPTH}", None)
    if isinstance(mapping, str):
        return _search(_compile(mapping, path), item, path, budget)
    if isinstance(mapping, dict):
        if set(mapping) == {_LITERAL}:
            return mapping[_LITERAL]
        return {
            key: _apply_mapping(value, item, f"{path}.{key}", depth + 1, budget)
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
    return [*_parsers(max_input_bytes), *_queries(max_input_bytes)]


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
            value: JsonValue = _decode_json(text)
        except _NotJson as exc:
            raise _bad("text", "json", f"not JSON: {exc}", text[:80]) from None
        except json.JSONDecodeError as exc:
            raise _bad(
                "text",
                "json",
                f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                text[:80],
            ) from None
        except ValueError as exc:  # an integer past Python's digit limit (4300 by default)
            raise _bad("text", "json", f"not usable JSON: {exc}", text[:80]) from None
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
        kept = lines[: max(0, max_rows)]
        cells = len(kept) * len(columns) if header else sum(len(line) for line in kept)
        if cells > max_input_bytes:  # short rows padded to a wide header: many cells per byte
            raise SandboxRefusalError(
                f"text: the table would hold {cells} cells ({len(kept)} rows of "
                f"{len(columns)} columns), more than the cap of {max_input_bytes}",
                rule="table_too_large",
                path="text",
                size=cells,
                limit=max_input_bytes,
            )
        rows: list[JsonValue] = []
        for line in kept:
            if header:
                rows.append(
                    {name: (line[i] if i < len(line) else None) for i, name in enumerate(columns)}
                )
            else:
                rows.append(list(line))
        return Table(columns=columns, rows=rows, truncated=len(lines) > len(rows))

    return [parse_json, parse_csv]


def _budget_for(data: JsonValue, max_input_bytes: int) -> _Budget:
    """A budget of ``max_input_bytes``, or of the data's own size when that is larger."""
    budget = _Budget(1 << 62)
    try:
        budget.limit = max(max_input_bytes, budget.size(data))
    except RecursionError:
        raise _bad("data", "depth", "the value nests too deeply", None) from None
    return budget


def _queries(max_input_bytes: int) -> list[Capability]:

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
        budget = _budget_for(data, max_input_bytes)
        compiled = _compile(expression, "expression")
        return Queried(result=_search(compiled, data, "expression", budget))

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
        budget = _budget_for(data, max_input_bytes)
        if for_each is None:
            return Queried(result=_apply_mapping(mapping, data, "mapping", 0, budget))
        items = _search(_compile(for_each, "for_each"), data, "for_each", budget, output=False)
        if not isinstance(items, list):
            raise ExecutionError(
                f"for_each selected a {type(items).__name__}, not a list", path="for_each"
            )
        return Queried(
            result=[_apply_mapping(mapping, item, "mapping", 0, budget) for item in items]
        )

    return [query, transform]
