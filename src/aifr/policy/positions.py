"""YAML with positions: every value's ``file:line:column`` and field path, for errors.

The YAML is composed into nodes before it is constructed, so that problems found later
(by the schema or a compiler) can still point at the line that caused them, with a
field path such as ``rules[3].when.inputs.path.regex``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from aifr.errors import ErrorCode, PolicyError
from aifr.policy.rules import SourceRef
from aifr.suggestions import did_you_mean

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
            message = "unknown field" + (did_you_mean(model, item["loc"]) if model else "")
        elif "input" in item and not isinstance(item["input"], dict | list):
            message += f" (got {item['input']!r})"
        yield source, message
