"""YAML with positions: every value's ``file:line:column`` and field path, for errors.

The YAML is composed into nodes before it is constructed, so that problems found later
(by the schema or a compiler) can still point at the line that caused them, with a
field path such as ``rules[3].when.inputs.path.regex``.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from aifr.errors import ErrorCode, PolicyError
from aifr.policy.rules import SourceRef

__all__ = ["LocatedYaml", "field_path", "policy_error", "schema_problems", "single_error"]

_MAX_REPORTED = 20
Path_ = tuple[str | int, ...]


class LocatedYaml:
    """One YAML file's data plus the position of every value, keyed by its field path.

    Raises:
        PolicyError: the text is not valid YAML or repeats a key in one mapping.
    """

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.marks: dict[Path_, tuple[int, int]] = {}
        self._seen: set[int] = set()
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            self.data: Any = None if node is None else loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = " ".join(p for p in (exc.context, exc.problem) if p)
            raise single_error(
                SourceRef(file, line, column, ""), f"invalid YAML: {problem}"
            ) from exc
        except yaml.YAMLError as exc:
            raise single_error(SourceRef(file, 1, 1, ""), f"invalid YAML: {exc}") from exc
        finally:
            loader.dispose()
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: Path_) -> None:
        if id(node) in self._seen:
            return  # an alias: its positions are those of the anchored node
        self._seen.add(id(node))
        self.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = (*path, key)
                if key in seen:
                    mark = key_node.start_mark
                    here = SourceRef(self.file, mark.line + 1, mark.column + 1, field_path(child))
                    raise single_error(here, f"duplicate key {key!r}")
                seen.add(key)
                self.marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                self._walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, (*path, index))

    def source(self, path: Sequence[str | int]) -> SourceRef:
        """Position of the deepest known part of ``path`` and its field text."""
        known: list[str | int] = []
        position = self.marks.get((), (1, 1))
        for part in path:
            candidate = (*known, part)
            if candidate in self.marks:
                known.append(part)
                position = self.marks[candidate]
            elif isinstance(part, str) and not _is_union_tag(part):
                known.append(part)  # a missing field: point at its parent
        return SourceRef(self.file, position[0], position[1], field_path(known))


_UNION_TAGS = frozenset({"operators", "one_of", "equals", "str", "int", "float", "bool", "none"})


def _is_union_tag(part: str) -> bool:
    # pydantic names the member of a union that failed inside the error location.
    return part in _UNION_TAGS or "[" in part


def field_path(path: Iterable[str | int]) -> str:
    """``("rules", 3, "when")`` -> ``rules[3].when``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def single_error(source: SourceRef, message: str) -> PolicyError:
    """A ``PolicyError`` for one located problem."""
    return policy_error([(source, message)])


def policy_error(problems: Sequence[tuple[SourceRef, str]]) -> PolicyError:
    """One ``PolicyError`` listing located problems (``details['errors']`` holds them all)."""
    lines = [
        f"{src}: {src.field + ': ' if src.field else ''}{msg}"
        for src, msg in problems[:_MAX_REPORTED]
    ]
    if len(problems) > _MAX_REPORTED:
        lines.append(f"... and {len(problems) - _MAX_REPORTED} more problems")
    first = problems[0][0]
    return PolicyError(
        "\n".join(lines),
        code=ErrorCode.POLICY_INVALID,
        file=first.file,
        line=first.line,
        column=first.column,
        field=first.field,
        errors=[
            {"file": s.file, "line": s.line, "column": s.column, "field": s.field, "message": m}
            for s, m in problems
        ],
    )


def schema_problems(
    located: LocatedYaml, exc: PydanticValidationError, model: type[BaseModel] | None = None
) -> Iterator[tuple[SourceRef, str]]:
    """Pydantic errors as located problems, one per field.

    With the ``model`` that was validated, an unknown field names the closest field
    allowed in that place (``capabilty`` -> ``capability``).
    """
    seen: set[SourceRef] = set()
    for item in exc.errors(include_url=False):
        source = located.source(item["loc"])
        if source in seen:
            continue  # a union reports each member's failure; the first one is enough
        seen.add(source)
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field" + _did_you_mean(model, item["loc"])
        elif "input" in item and not isinstance(item["input"], dict | list):
            message += f" (got {item['input']!r})"
        yield source, message


def _did_you_mean(model: type[BaseModel] | None, loc: Sequence[str | int]) -> str:
    if model is None or not loc or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], _fields_at(model, loc[:-1]), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fields_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The field names (as written in YAML) allowed at ``loc``; empty when unclear."""
    candidates: list[Any] = [model]
    for part in loc:
        candidates = [inner for c in candidates for inner in _step(c, part)]
    return sorted(
        {
            field.alias or name
            for c in candidates
            for m in _members(c)
            if isinstance(m, type) and issubclass(m, BaseModel)
            for name, field in m.model_fields.items()
        }
    )


def _members(annotation: Any) -> list[Any]:
    """``annotation`` with ``Annotated``, ``Optional`` and unions taken apart."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _step(annotation: Any, part: str | int) -> list[Any]:
    """What a value of ``annotation`` holds under key or index ``part`` (unresolved types)."""
    found: list[Any] = []
    for member in _members(annotation):
        origin, args = typing.get_origin(member), typing.get_args(member)
        if isinstance(member, type) and issubclass(member, BaseModel) and isinstance(part, str):
            for name, field in member.model_fields.items():
                if part in (name, field.alias):
                    found.append(field.annotation)
        elif origin in (list, tuple, Sequence) and isinstance(part, int) and args:
            found.append(args[0])
        elif origin is dict and isinstance(part, str) and len(args) == 2:
            found.append(args[1])
    return found or _tagged(annotation, part)


def _tagged(annotation: Any, tag: str | int) -> list[Any]:
    """The members of a discriminated union whose ``Tag`` is ``tag`` (pydantic puts it in loc)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        if any(getattr(meta, "tag", None) == tag for meta in annotation.__metadata__):
            return [args[0]]
        return _tagged(args[0], tag)
    if origin in (typing.Union, types.UnionType):
        return [m for arg in args for m in _tagged(arg, tag)]
    return []
