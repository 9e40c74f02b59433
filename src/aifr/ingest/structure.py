"""Where code and prose may be cut: the units (functions, classes, sections) of a file.

Each language yields a list of :class:`Unit` that covers the file's lines without gaps,
and can open a unit into the units inside it (a class into its methods, a function into
its statements) when the unit alone is too big for one chunk. Python is read with
``ast``; JavaScript, TypeScript, Go, Rust and Java with a brace-depth scanner that skips
strings, character literals and comments; Markdown is cut at headings outside fences.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

__all__ = ["LANGUAGES", "Unit", "language_for", "units_for"]

LANGUAGES: dict[str, str] = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".jsx": "javascript", ".mjs": "javascript", ".cjs": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".go": "go", ".rs": "rust", ".java": "java",
    ".md": "markdown", ".markdown": "markdown",
}  # fmt: skip
_BRACES = frozenset({"javascript", "typescript", "go", "rust", "java"})
_CHAR_LITERAL = re.compile(r"'(?:\\.[^'\n]{0,8}|[^'\\\n])'")
_RUST_RAW = re.compile(r"(?<![A-Za-z0-9_])b?r(#*)\"")
_HEADING = re.compile(r"^ {0,3}#{1,6}(?:\s|$)")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


@dataclass(frozen=True, slots=True)
class Unit:
    """Lines ``start`` (inclusive) to ``end`` (exclusive), 0-based, and how to open it."""

    start: int
    end: int
    inner: Callable[[], list[Unit]] | None = None


def language_for(path: str) -> str:
    """The language of a file by its suffix (``python``, ``go``...), ``text`` otherwise."""
    name = PurePosixPath(path.rsplit("!/", 1)[-1]).name.lower()
    for suffix, language in LANGUAGES.items():
        if name.endswith(suffix):
            return language
    return "text"


def units_for(language: str, lines: list[str]) -> list[Unit]:
    """The top-level units of a file's lines; one unit for the whole file if none apply."""
    if language == "python":
        units = _python_units(lines)
        if units is not None:
            return units
    elif language in _BRACES:
        depths = _depths(lines, language)
        return _brace_units(lines, depths, 0, len(lines), 0)
    elif language == "markdown":
        return _cover(_markdown_starts(lines), 0, len(lines), lambda _s, _e: None)
    return [Unit(0, len(lines))]


def _cover(
    starts: list[int],
    start: int,
    end: int,
    opener: Callable[[int, int], Callable[[], list[Unit]] | None],
) -> list[Unit]:
    """Units from boundary lines so that they cover ``start..end`` with no gap."""
    bounds = sorted({start, *(s for s in starts if start < s < end)})
    return [
        Unit(a, b, opener(a, b)) for a, b in zip(bounds, [*bounds[1:], end], strict=True) if b > a
    ]


# Python -------------------------------------------------------------------------------


def _python_units(lines: list[str]) -> list[Unit] | None:
    try:
        tree = ast.parse("".join(lines))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return _python_cover(tree.body, lines, 0, len(lines))


def _python_cover(body: list[ast.stmt], lines: list[str], start: int, end: int) -> list[Unit]:
    by_start: dict[int, ast.stmt] = {}
    for node in body:
        first = min([node.lineno, *(d.lineno for d in _decorators(node))]) - 1
        while first - 1 >= start and lines[first - 1].lstrip().startswith("#"):
            first -= 1  # a comment right above a definition belongs to it
        by_start.setdefault(first, node)

    def opener(a: int, b: int) -> Callable[[], list[Unit]] | None:
        node = by_start.get(a)
        inner = getattr(node, "body", None)
        if not isinstance(inner, list) or not inner or not isinstance(inner[0], ast.stmt):
            return None
        return lambda: _python_cover(inner, lines, a, b)

    return _cover(list(by_start), start, end, opener)


def _decorators(node: ast.stmt) -> list[ast.expr]:
    decorators = getattr(node, "decorator_list", None)
    return decorators if isinstance(decorators, list) else []


# Brace languages ----------------------------------------------------------------------


def _brace_units(
    lines: list[str], depths: list[int], start: int, end: int, level: int
) -> list[Unit]:
    starts: list[int] = []
    for i in range(start, end):
        if depths[i] != level or not lines[i].strip():
            continue
        previous = lines[i - 1] if i > start else ""
        closed = i > start and depths[i - 1] > level  # the line above closed a block
        if i == start or not previous.strip() or closed:
            starts.append(i)

    def opener(a: int, b: int) -> Callable[[], list[Unit]] | None:
        if not any(depths[i] > level for i in range(a, b)):
            return None
        return lambda: _brace_units(lines, depths, a, b, level + 1)

    return _cover(starts, start, end, opener)


def _depths(lines: list[str], language: str) -> list[int]:
    """The brace depth at the start of each line, strings and comments skipped."""
    depths: list[int] = []
    depth = 0
    state: str | None = None  # "block" comment, a quote, or a raw-string terminator
    for line in lines:
        depths.append(depth)
        depth, state = _scan_line(line, language, depth, state)
    return depths


def _scan_line(line: str, language: str, depth: int, state: str | None) -> tuple[int, str | None]:
    i, n = 0, len(line)
    while i < n:
        if state is not None:
            i, state = _skip_inside(line, i, state)
            continue
        char = line[i]
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state, i = "block", i + 2
        elif char == '"' or (char == "`" and language != "rust" and language != "java"):
            state, i = char, i + 1
        elif char == "'":
            if language in ("javascript", "typescript"):
                state, i = "'", i + 1
            else:
                literal = _CHAR_LITERAL.match(line, i)
                i = literal.end() if literal else i + 1  # else a Rust lifetime: not a quote
        elif char in "br" and language == "rust" and (raw := _RUST_RAW.match(line, i)):
            state, i = '"' + raw.group(1), raw.end()
        else:
            if char == "{":
                depth += 1
            elif char == "}":
                depth = max(0, depth - 1)
            i += 1
    if state in ('"', "'"):
        state = None  # an ordinary string does not run past its line
    return depth, state


def _skip_inside(line: str, i: int, state: str) -> tuple[int, str | None]:
    if state == "block":
        found = line.find("*/", i)
        return (len(line), state) if found < 0 else (found + 2, None)
    if state in ('"', "'"):
        while i < len(line):
            if line[i] == "\\":
                i += 2
            elif line[i] == state:
                return i + 1, None
            else:
                i += 1
        return len(line), state
    found = line.find(state, i)  # ` or a raw-string terminator such as "#
    return (len(line), state) if found < 0 else (found + len(state), None)


# Markdown -----------------------------------------------------------------------------


def _markdown_starts(lines: list[str]) -> list[int]:
    starts: list[int] = []
    fence: str | None = None
    for i, line in enumerate(lines):
        opened = _FENCE.match(line)
        if opened:
            fence = None if fence == opened.group(1) else (fence or opened.group(1))
        elif fence is None and _HEADING.match(line):
            starts.append(i)
    return starts
