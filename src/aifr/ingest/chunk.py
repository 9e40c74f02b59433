"""The ChunkPlanner: deterministic, code-aware, size-bounded chunks of a sanitized file.

Units from :mod:`aifr.ingest.structure` (functions, classes, sections) are packed in
order into chunks of about ``target_lines``; a unit too big for one chunk is opened into
the units inside it, and one that cannot be opened (a long function body of plain
statements, prose, a log) is cut into windows of ``max_lines`` that overlap by
``overlap_lines``. No chunk passes ``max_lines`` or ``max_chars``: a single line longer
than ``max_chars`` (minified code) is cut into pieces that share its line number. The
same text always gives the same chunks, so their content hashes can be compared
between ingests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from aifr.ingest.ports import Chunk
from aifr.ingest.structure import Unit, language_for, units_for

__all__ = ["ChunkLimits", "ChunkPlanner", "content_hash"]

# Units are opened at most this deep; below, windows. A hostile file nested thousands of
# braces deep must not exhaust the recursion limit (and end the whole ingest).
_MAX_DEPTH = 16


@dataclass(frozen=True, slots=True)
class ChunkLimits:
    """Size bounds of a chunk: packing target, hard caps and window overlap."""

    target_lines: int = 40
    max_lines: int = 60
    max_chars: int = 2000
    overlap_lines: int = 5


def content_hash(text: str) -> str:
    """SHA-256 hex digest of a text's UTF-8 bytes: the identity of a chunk."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class ChunkPlanner:
    """Cuts one file's sanitized text into :class:`Chunk` records."""

    def __init__(self, limits: ChunkLimits | None = None) -> None:
        self.limits = limits or ChunkLimits()

    def plan(self, repo: str, path: str, text: str) -> list[Chunk]:
        """The chunks of ``text`` (already sanitized), in file order; none for blank text."""
        lines = text.split("\n")  # only \n ends a line, as for editors, git and ast
        lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
        language = language_for(path)
        spans = self._pack(units_for(language, lines), lines)
        chunks: list[Chunk] = []
        for start, end, piece in spans:
            if not piece.strip():
                continue
            chunks.append(Chunk(repo, path, start + 1, end, language, piece, content_hash(piece)))
        return chunks

    def _fits(self, lines: list[str], start: int, end: int, cap: int) -> bool:
        if end - start > cap:
            return False
        return sum(len(line) for line in lines[start:end]) <= self.limits.max_chars

    def _pack(
        self, units: list[Unit], lines: list[str], depth: int = 0
    ) -> list[tuple[int, int, str]]:
        limits = self.limits
        out: list[tuple[int, int, str]] = []
        current: tuple[int, int] | None = None
        for unit in units:
            if not self._fits(lines, unit.start, unit.end, limits.max_lines):
                if current is not None:
                    out.append(_span(lines, *current))
                    current = None
                out.extend(self._split(unit, lines, depth))
                continue
            if current is not None and self._fits(lines, current[0], unit.end, limits.target_lines):
                current = (current[0], unit.end)
                continue
            if current is not None:
                out.append(_span(lines, *current))
            current = (unit.start, unit.end)
        if current is not None:
            out.append(_span(lines, *current))
        return out

    def _split(self, unit: Unit, lines: list[str], depth: int) -> list[tuple[int, int, str]]:
        if unit.inner is not None and depth < _MAX_DEPTH:
            inner = unit.inner()
            if len(inner) > 1 or (
                inner and (inner[0].start, inner[0].end) != (unit.start, unit.end)
            ):
                return self._pack(inner, lines, depth + 1)
        return self._windows(unit.start, unit.end, lines)

    def _windows(self, start: int, end: int, lines: list[str]) -> list[tuple[int, int, str]]:
        """Overlapping windows of whole lines, each within both caps."""
        limits = self.limits
        out: list[tuple[int, int, str]] = []
        begin = start
        while begin < end:
            stop, size = begin, 0
            while stop < end and stop - begin < limits.max_lines:
                if size + len(lines[stop]) > limits.max_chars and stop > begin:
                    break
                size += len(lines[stop])
                stop += 1
            if stop == begin + 1 and len(lines[begin]) > limits.max_chars:
                line = lines[begin]
                out.extend(
                    (begin, begin + 1, line[i : i + limits.max_chars])
                    for i in range(0, len(line), limits.max_chars)
                )
            else:
                out.append(_span(lines, begin, stop))
            if stop >= end:
                break
            begin = max(begin + 1, stop - limits.overlap_lines)
        return out


def _span(lines: list[str], start: int, end: int) -> tuple[int, int, str]:
    return start, end, "".join(lines[start:end])
