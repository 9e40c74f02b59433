"""The orjson fast path of the JSON Lines reader reads every line as the json module does.

A text stream goes through the json module only, so reading the same lines as bytes
(the import path, orjson first) and as text must give equal values and equal problems,
including the lines orjson reads differently or refuses: integers beyond 64 bits, NaN,
lone surrogate escapes, NUL escapes, duplicate keys, deep nesting, bad UTF-8.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest

from aifr.findings.parsers.reader import read_records
from aifr.findings.records import ParseProblem

SAMPLES = Path(__file__).resolve().parents[3] / ".." / "shared" / "samples" / "scanners"

TRICKY = [
    b'{"n": 123456789012345678901234567890}',
    b'{"n": 18446744073709551616, "m": -9223372036854775809}',
    b'{"n": 9223372036854775807, "f": 1.0000000000000002, "e": 2.4703282292062327e-324}',
    b'{"x": NaN, "y": Infinity, "z": -Infinity}',
    b'{"s": "\\ud800 lone", "t": "\\udc00", "pair": "\\ud83d\\ude00"}',
    b'{"nul": "a\\u0000b", "key\\u0000": 1}',
    b'{"a": 1, "a": 2}',
    b'{"deep": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"bad utf8": "\xff\xfe"}',
    b'{"truncated": "abc',
    b'{"trailing": 1} x',
    b"   ",
    b'{"ok": "caf\xc3\xa9", "big": 1e400}',
    b'"just a string"',
    b'{"digits in text": "12345678901234567890123"}',
]


def _read(data: bytes, *, text: bool) -> list[tuple[str, int, object]]:
    stream: io.BytesIO | io.StringIO
    stream = io.StringIO(data.decode("utf-8", "surrogateescape")) if text else io.BytesIO(data)
    _, records = read_records(stream)
    out: list[tuple[str, int, object]] = []
    for item in records:
        if isinstance(item, ParseProblem):
            out.append(("problem", item.line, item.reason))
        else:
            out.append(("record", item[0], _comparable(item[1])))
    return out


def _comparable(value: object) -> object:
    """NaN made equal to itself, so two reads of one line compare."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("line", TRICKY)
def test_a_tricky_line_reads_the_same_as_bytes_and_as_text(line: bytes) -> None:
    data = b'{"first": 1}\n' + line + b'\n{"last": 2}\n'
    if b"\xff" in line:  # not text: the text stream cannot hold it, so compare to known
        assert _read(data, text=False)[1][0] == "problem"
        return
    as_bytes, as_text = _read(data, text=False), _read(data, text=True)
    assert as_bytes == as_text
    assert as_bytes[-1] == ("record", 3, {"last": 2})


def test_integers_beyond_64_bits_stay_exact() -> None:
    [(kind, _, value)] = _read(b'{"n": 123456789012345678901234567890}\n', text=False)
    assert kind == "record" and value == {"n": 123456789012345678901234567890}


def test_a_lone_surrogate_is_kept_as_escape_text() -> None:
    [(_, _, value)] = _read(b'{"s": "\\ud800"}\n', text=False)
    assert value == {"s": "\\ud800"}


@pytest.mark.parametrize(
    "sample", sorted(SAMPLES.glob("**/*.jsonl")), ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_every_json_lines_sample_reads_the_same_as_bytes_and_as_text(sample: Path) -> None:
    data = sample.read_bytes()
    assert _read(data, text=False) == _read(data, text=True)
