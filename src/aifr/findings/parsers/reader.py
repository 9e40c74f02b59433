"""Read JSON records from scanner output in constant memory, whatever its layout.

Three layouts reach us: one object per line (``-jsonl``, feroxbuster, katana), one JSON
array of indented objects (nuclei's ``-je``), and indented objects one after another. The
first non-blank line tells them apart (``[`` opens an array, a line holding only ``{``
opens an indented object, anything else is a line of JSON Lines). Lines go through
``json.loads`` one at a time; the two whole-file layouts go through
``JSONDecoder.raw_decode`` over a sliding buffer, so a multi-gigabyte export never has to
fit in memory: only the largest single record does.

A record that cannot be decoded becomes a :class:`ParseProblem` with the line it starts
on, and reading goes on with the next line (JSON Lines) or the next object that starts
at the indentation of the first one (arrays and indented objects).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Literal, cast

import orjson

from aifr.findings.records import ParseProblem

__all__ = ["DEFAULT_MAX_RECORD", "Container", "LineHook", "RawRecord", "read_records"]

Container = Literal["jsonl", "array", "objects"]
# A decoded JSON value (None where the record was a problem) and the line it starts on.
RawRecord = tuple[int, object]

_CHUNK = 256 * 1024
_HEAD = 64 * 1024
# One record (a line, or one value of whole-file JSON) larger than this is refused and
# skipped, never buffered whole: nuclei caps a stored response at 10 MB by default, so
# real records stay far below it, and a hostile file cannot exhaust memory with one line.
DEFAULT_MAX_RECORD = 64 * 1024 * 1024
_BOM = "\ufeff"
_NEWLINES = ("\n", b"\n")
# A \\uD800-\\uDFFF escape (half of a surrogate pair, or a lone surrogate) or a
# \\u0000 escape: the values _scrub must look at.
_SURROGATE_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")
# 19 digits in a row: maybe an integer beyond 64 bits, which orjson reads as a float
# where the json module keeps it exact; such a line goes to the json module. Found by
# turning every digit into "0" and searching 19 zeros (a regex is 8 times slower).
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19
_DECODER = json.JSONDecoder()


class LineHook:
    """A typed fast path the caller may set while reading JSON Lines (see ``_read_lines``).

    ``parse`` takes a line's bytes and its number and returns a value to yield in place
    of the decoded line, or None to decode the line as always. It is only called for a
    line orjson would decode as it is (no long integer, no surrogate or NUL escape).
    """

    __slots__ = ("parse",)

    def __init__(self) -> None:
        self.parse: Callable[[bytes, int], object | None] | None = None


@dataclass(slots=True)
class _Opened:
    container: Container
    head: str | bytes


def _first_line(head: str | bytes) -> str:
    text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    for line in text.splitlines():
        if line.strip():
            return line.strip().lstrip(_BOM).strip()
    return ""


def _open(stream: IO[bytes] | IO[str]) -> _Opened:
    head = stream.read(_HEAD)
    first = _first_line(head)
    if first.startswith("["):
        return _Opened("array", head)
    if first == "{":
        return _Opened("objects", head)
    return _Opened("jsonl", head)


def read_records(
    stream: IO[bytes] | IO[str],
    max_record: int = DEFAULT_MAX_RECORD,
    hook: LineHook | None = None,
) -> tuple[Container, Iterator[RawRecord | ParseProblem]]:
    """The layout of ``stream`` and an iterator over its records (or their problems).

    ``max_record`` bounds one record in bytes (characters for a text stream). ``hook``
    (JSON Lines of bytes only) may turn a line into its value without the decode.
    """
    opened = _open(stream)
    if opened.container == "jsonl":
        return opened.container, _read_lines(opened.head, stream, max_record, hook or LineHook())
    return opened.container, _ValueReader(opened, stream, max_record).records()


def _head_lines(
    head: str | bytes, stream: IO[bytes] | IO[str], max_record: int
) -> list[str] | list[bytes]:
    """The head's lines, the last one completed from the stream (split on newlines only).

    The byte-order mark belongs to the file, not to the first record: it goes here, so
    the per-line loop never has to look for it.
    """
    if isinstance(head, bytes):
        rest = b"" if not head or head.endswith(b"\n") else cast(bytes, stream.readline(max_record))
        data = head + rest
        parts = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
        return [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    tail = "" if not head or head.endswith("\n") else cast(str, stream.readline(max_record))
    text = head + tail
    pieces = text.removeprefix(_BOM).split("\n")
    return [piece + "\n" for piece in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])


def _bounded_lines(stream: IO[bytes] | IO[str], max_record: int) -> Iterator[str | bytes]:
    """The stream's lines, a line longer than ``max_record`` cut into pieces of that size."""
    readline = stream.readline
    while line := readline(max_record):
        yield line


def _read_lines(
    head: str | bytes, stream: IO[bytes] | IO[str], max_record: int, hook: LineHook
) -> Iterator[RawRecord | ParseProblem]:
    # The hot loop of every import. A line of bytes goes to orjson (a compiled decoder,
    # 3x the json module); where orjson refuses it or could read it differently (an
    # integer beyond 64 bits, NaN, a lone surrogate escape) the line goes through the
    # json module exactly as before, so what a line decodes to, and the problem reported
    # for a bad one, do not depend on orjson. A blank line or an overlong one is only
    # looked for once decoding has failed.
    fast = orjson.loads
    as_zero = _DIGITS_AS_ZERO
    number = 0
    in_long_line = False
    for source in (_head_lines(head, stream, max_record), _bounded_lines(stream, max_record)):
        for line in source:
            if in_long_line:  # the rest of a line cut at max_record
                in_long_line = line[-1:] not in _NEWLINES
                continue
            number += 1
            if len(line) >= max_record and (len(line) > max_record or line[-1:] not in _NEWLINES):
                # A line must fit in max_record with its line end; the rest of a cut line
                # still belongs to this line number.
                in_long_line = line[-1:] not in _NEWLINES
                yield ParseProblem(number, f"record larger than {max_record} bytes, skipped")
                continue
            if line.__class__ is bytes and _LONG_DIGITS not in line.translate(as_zero):
                escaped = b"\\u" in line and _SURROGATE_ESCAPE_BYTES.search(line) is not None
                if hook.parse is not None and not escaped:
                    parsed = hook.parse(line, number)
                    if parsed is not None:
                        yield number, parsed
                        continue
                try:
                    value = fast(line)
                except orjson.JSONDecodeError:
                    pass  # the json module decides, and describes the problem
                else:
                    if escaped:
                        value = _scrub(value)
                    yield number, value
                    continue
            decoded = _decode_line(number, line)
            if decoded is not None:
                yield decoded


def _decode_line(number: int, line: str | bytes) -> RawRecord | ParseProblem | None:
    """One line through the json module: its value, its problem, or None when blank."""
    try:
        text = line.decode() if isinstance(line, bytes) else line
        value = _DECODER.decode(text)
        if "\\u" in text and _SURROGATE_ESCAPE.search(text):
            value = _scrub(value)
        return number, value
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        if line.strip():
            return ParseProblem(number, _describe_line_error(line, exc))
        return None
    except RecursionError:
        return ParseProblem(number, "malformed JSON: nested too deeply")


def _scrub(value: object) -> object:
    r"""The value with every lone UTF-16 surrogate and NUL written as its escape text.

    JSON may spell a lone surrogate (``"\ud800"``) and the json module decodes it into a
    string that cannot be encoded as UTF-8, so a database, a JSON export or the model would
    fail on it later; PostgreSQL refuses a NUL (``"\u0000"``) in any text. Written out as
    text (``\ud800``, ``\u0000``), the value stays readable in every store and nothing is
    lost.
    """
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\\u0000")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    if isinstance(value, dict):
        return {_scrub(key): _scrub(item) for key, item in value.items()}
    return value


def _describe_line_error(line: str | bytes, exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        stripped = line.rstrip()
        if exc.pos >= len(stripped) - 1 or exc.msg.startswith("Unterminated string"):
            return f"truncated JSON (column {exc.colno}): {exc.msg}"
        return f"malformed JSON (column {exc.colno}): {exc.msg}"
    return f"not UTF-8 text: {exc}"


class _ValueReader:
    """Whole-file JSON (an array, or objects one after another) read value by value."""

    def __init__(self, opened: _Opened, stream: IO[bytes] | IO[str], max_record: int) -> None:
        self._stream = stream
        self._max_record = max_record
        self._is_array = opened.container == "array"
        self._decode = codecs.getincrementaldecoder("utf-8")("replace")
        self._buf = ""
        self._pos = 0
        self._line = 1
        self._eof = False
        self._indent: str | None = None
        self._add(opened.head)
        self._buf = self._buf.lstrip(_BOM)

    def _add(self, data: str | bytes) -> None:
        text = self._decode.decode(data, final=not data) if isinstance(data, bytes) else data
        if not data:
            self._eof = True
        self._buf = self._buf[self._pos :] + text
        self._pos = 0

    def _fill(self) -> bool:
        if self._eof:
            return False
        self._add(self._stream.read(_CHUNK))
        return True

    def _advance(self, to: int) -> None:
        self._line += self._buf.count("\n", self._pos, to)
        self._pos = to

    def _skip_blank(self) -> bool:
        """Move past whitespace; False at the end of the input."""
        while True:
            buf, pos = self._buf, self._pos
            end = len(buf)
            while pos < end and buf[pos] in " \t\r\n":
                pos += 1
            self._advance(pos)
            if pos < end:
                return True
            if not self._fill():
                return False

    def records(self) -> Iterator[RawRecord | ParseProblem]:
        """Every value of the file, with the line it starts on, or a problem in its place."""
        opened = not self._is_array
        closed = False
        clean = True  # False after a resync skipped text: the closing bracket may be gone
        while self._skip_blank():
            char = self._buf[self._pos]
            if not opened:
                if char == "[":
                    opened, closed = True, False
                    self._advance(self._pos + 1)
                    continue
                yield ParseProblem(self._line, f"unexpected {char!r} outside the JSON array")
                clean = self._resync()
                continue
            if self._is_array and char == "]":
                opened, closed = False, True
                self._advance(self._pos + 1)
                continue
            if self._is_array and char == ",":
                self._advance(self._pos + 1)
                continue
            if self._indent is None:
                start = self._buf.rfind("\n", 0, self._pos) + 1
                self._indent = self._buf[start : self._pos]
            result = self._decode_one()
            if isinstance(result, ParseProblem):
                yield result
                clean = self._resync()
            else:
                yield result
                clean = True
        if self._is_array and opened and not closed and clean:
            yield ParseProblem(self._line, "truncated JSON: the array is not closed")

    def _decode_one(self) -> RawRecord | ParseProblem:
        start_line = self._line
        while True:
            try:
                value, end = _DECODER.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                near_end = len(self._buf) - exc.pos < 64
                if (near_end or exc.msg.startswith("Unterminated string")) and not self._eof:
                    if len(self._buf) - self._pos > self._max_record:
                        return ParseProblem(
                            start_line, f"record larger than {self._max_record} characters"
                        )
                    self._fill()
                    continue
                line = self._line + self._buf.count("\n", self._pos, exc.pos)
                kind = "truncated" if near_end and self._eof else "malformed"
                return ParseProblem(
                    start_line, f"{kind} JSON at line {line} (column {exc.colno}): {exc.msg}"
                )
            except RecursionError:
                return ParseProblem(start_line, "malformed JSON: nested too deeply")
            if _SURROGATE_ESCAPE.search(self._buf, self._pos, end):
                value = _scrub(value)
            self._advance(end)
            return start_line, value

    def _resync(self) -> bool:
        """Skip to the next line that opens a record at the first record's indentation.

        Returns False when the input ended first (text was skipped up to the end).
        """
        pattern = re.compile("\n" + re.escape(self._indent or "") + "{")
        search_from = self._pos + 1
        while True:
            found = pattern.search(self._buf, search_from)
            if found is not None:
                self._advance(found.start() + 1)
                return True
            keep = max(self._pos, len(self._buf) - len(self._indent or "") - 2)
            self._advance(keep)
            if not self._fill():
                self._advance(len(self._buf))
                return False
            search_from = self._pos  # _fill moved the kept tail to the buffer's start
