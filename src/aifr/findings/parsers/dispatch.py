"""Detect the scanner from content and run its parser over a whole output stream.

The tool and generation come from each record's keys, never from the file name: a
nuclei result has ``template-id``/``templateID``/``template``, a feroxbuster record a
``type`` of ``response``/``statistics``/``configuration``/``log`` with that type's keys,
a katana record an ``endpoint`` (flat, or under ``request``). With ``scanner="auto"`` the
first recognized record fixes the tool for the stream; a record of another tool after it
is reported as a problem, not mixed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Final, Literal, get_args

from aifr.errors import ErrorCode, FindingsError
from aifr.findings.parsers.feroxbuster import (
    FeroxbusterParser,
    feroxbuster_generation,
    is_state_file,
)
from aifr.findings.parsers.katana import katana_generation, parse_katana
from aifr.findings.parsers.nuclei import NucleiParser, nuclei_generation
from aifr.findings.parsers.reader import DEFAULT_MAX_RECORD, Container, LineHook, read_records
from aifr.findings.records import ParsedFinding, ParseEvent, ParseProblem

__all__ = [
    "SCANNERS",
    "Detection",
    "ScannerChoice",
    "detect_record",
    "detect_scanner",
    "parse_findings",
]

ScannerName = Literal["nuclei", "feroxbuster", "katana"]
ScannerChoice = Literal["auto", "nuclei", "feroxbuster", "katana"]
SCANNERS: Final[tuple[str, ...]] = get_args(ScannerName)
_DETECT_LIMIT = 1000  # records read by detect_scanner before it gives up

_Parse = Callable[[dict[str, object], int], ParseEvent]


@dataclass(frozen=True, slots=True)
class Detection:
    """What a stream holds: the tool, the generation of its first record, and the layout."""

    scanner: str
    generation: str
    container: Container
    line: int


def detect_record(record: Mapping[str, object]) -> tuple[str, str] | None:
    """``(scanner, generation)`` of one decoded record, or None when no parser knows it."""
    generation = nuclei_generation(record)
    if generation is not None:
        return "nuclei", generation
    generation = feroxbuster_generation(record)
    if generation is not None:
        return "feroxbuster", generation
    generation = katana_generation(record)
    if generation is not None:
        return "katana", generation
    return None


def detect_scanner(
    stream: IO[bytes] | IO[str], *, max_record_bytes: int = DEFAULT_MAX_RECORD
) -> Detection:
    """The scanner and generation of an output stream, read from its first records.

    A seekable stream is put back where it was, so the same stream can then be parsed.

    Raises:
        FindingsError: ``findings.unknown_format`` when none of the first records is
            output of a known scanner; ``findings.parse_failed`` when reading fails.
    """
    start = stream.tell() if stream.seekable() else None
    try:
        container, records = _open(stream, max_record_bytes)
        for count, item in enumerate(_guarded(records)):
            if count >= _DETECT_LIMIT:
                break
            if isinstance(item, ParseProblem) or not isinstance(item[1], dict):
                continue
            found = detect_record(item[1])
            if found is not None:
                return Detection(found[0], found[1], container, item[0])
    finally:
        if start is not None:
            stream.seek(start)
    raise FindingsError(
        "the input is not output of a known scanner (nuclei, feroxbuster or katana): "
        f"none of its first {_DETECT_LIMIT} records has their keys",
        code=ErrorCode.FINDINGS_UNKNOWN_FORMAT,
        scanners=list(SCANNERS),
    )


def parse_findings(
    stream: IO[bytes] | IO[str],
    scanner: str = "auto",
    *,
    max_record_bytes: int = DEFAULT_MAX_RECORD,
) -> Iterator[ParseEvent]:
    """Every finding, skipped record and problem of a scanner output stream, in order.

    Streams in constant memory: one record at a time, and a record larger than
    ``max_record_bytes`` (64 MiB by default) is skipped as a problem. Problems are values,
    not exceptions: a malformed or truncated record is yielded as a
    :class:`~aifr.findings.records.ParseProblem` with its line and the rest is parsed.

    Raises:
        FindingsError: ``findings.unknown_format`` for a scanner name that is not
            ``auto`` or a known scanner; ``findings.parse_failed`` when reading fails.
    """
    if scanner != "auto" and scanner not in SCANNERS:
        raise FindingsError(
            f"unknown scanner {scanner!r}: choose auto, {', '.join(SCANNERS)}",
            code=ErrorCode.FINDINGS_UNKNOWN_FORMAT,
            scanner=scanner,
        )
    return _events(stream, scanner, max_record_bytes)


def _events(stream: IO[bytes] | IO[str], scanner: str, max_record: int) -> Iterator[ParseEvent]:
    fixed: str | None = None if scanner == "auto" else scanner
    ferox = FeroxbusterParser()
    hook = LineHook()
    parse: _Parse | None = None if fixed is None else _parser_for(fixed, ferox, hook)
    _, records = _open(stream, max_record, hook)
    for item in _guarded(records):
        if isinstance(item, ParseProblem):
            yield item
            continue
        line, record = item
        if record.__class__ is ParsedFinding:  # the nuclei parser's typed fast path
            yield record
            continue
        if not isinstance(record, dict):
            yield ParseProblem(line, f"not a JSON object (a {_json_type(record)})")
            continue
        if parse is None or fixed is None:
            found = detect_record(record)
            if found is None:
                yield ParseProblem(
                    line, "not output of a known scanner (nuclei, feroxbuster or katana)"
                )
                continue
            fixed = found[0]
            parse = _parser_for(fixed, ferox, hook)
        if fixed == "feroxbuster" and is_state_file(record):
            yield from ferox.parse_state(record, line)
            continue
        event = parse(record, line)
        if isinstance(event, ParseProblem):
            other = detect_record(record)
            if other is not None and other[0] != fixed:
                event = ParseProblem(line, f"a {other[0]} record in {fixed} output")
        yield event


def _parser_for(scanner: str, ferox: FeroxbusterParser, hook: LineHook) -> _Parse:
    if scanner == "nuclei":
        nuclei = NucleiParser()
        hook.parse = nuclei.parse_line
        return nuclei.parse
    if scanner == "feroxbuster":
        return ferox.parse
    return parse_katana


def _open(
    stream: IO[bytes] | IO[str], max_record: int, hook: LineHook | None = None
) -> tuple[Container, Iterator[tuple[int, object] | ParseProblem]]:
    try:
        return read_records(stream, max_record, hook)
    except OSError as exc:
        raise _read_failed(exc) from exc


def _read_failed(exc: OSError) -> FindingsError:
    return FindingsError(
        f"reading scanner output failed: {exc}", code=ErrorCode.FINDINGS_PARSE_FAILED
    )


def _guarded(
    records: Iterator[tuple[int, object] | ParseProblem],
) -> Iterator[tuple[int, object] | ParseProblem]:
    """Translate a read failure (a closed pipe, a disk error) into ``findings.parse_failed``."""
    try:
        yield from records
    except OSError as exc:
        raise _read_failed(exc) from exc


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"
