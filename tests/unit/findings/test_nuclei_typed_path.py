"""The typed fast path of the nuclei parser gives what the general path gives, line by line.

``NucleiParser.parse_line`` decodes a generation C line into a msgspec Struct of the keys
the mapping reads; any line it refuses (None) takes the general path. Every nuclei sample
and fixture line, the benchmark's generated lines and a set of edge cases go through
both, and the results must be equal; a text stream (the json module, no fast path) and
a byte stream (the fast path) must give equal events.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from aifr.findings import ParsedFinding
from aifr.findings.fingerprint import compute_fingerprint
from aifr.findings.location import target_of
from aifr.findings.parsers import parse_findings
from aifr.findings.parsers.nuclei import NucleiParser

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / ".." / "shared" / "samples" / "scanners" / "nuclei"
FIXTURES = ROOT / "tests" / "fixtures" / "findings" / "nuclei"

_BASE = {
    "template": "http/misc/x.yaml",
    "template-url": "https://templates.example/x",
    "template-id": "x",
    "info": {"name": "X", "author": ["a"], "tags": ["t"], "severity": "high"},
    "type": "http",
    "host": "h.example.test",
    "port": "443",
    "scheme": "https",
    "url": "https://h.example.test",
    "matched-at": "https://h.example.test/p",
    "ip": "10.0.0.1",
    "timestamp": "2026-10-02T09:14:03.518223Z",
    "matcher-status": True,
}


def _variant(**changes: object) -> bytes:
    record = dict(_BASE)
    for key, value in changes.items():
        name = key.replace("_", "-")
        if value is _DROP:
            record.pop(name, None)
        else:
            record[name] = value
    return json.dumps(record).encode() + b"\n"


_DROP = object()

EDGE = [
    _variant(),
    _variant(unknown_field={"kept": [1, 2]}),
    _variant(host=7),
    _variant(host=None, url=None),
    _variant(info=["not", "a", "dict"]),
    _variant(info=_DROP),
    _variant(info={"name": "X", "severity": "critical", "extra-key": {"kept": True}}),
    _variant(template_id="   "),
    _variant(template_id=" padded "),
    _variant(template_id=3),
    _variant(timestamp="not a time"),
    _variant(timestamp=12),
    _variant(extracted_results=["b", 3, "a", None]),
    _variant(extracted_results="one"),
    _variant(matcher_name="", extractor_name="e"),
    _variant(port=8443, matched_at="h.example.test"),
    _variant(port="99999", matched_at=_DROP),
    _variant(meta={"n": 123456789012345678901234567890}),
    _variant(request="\ud800 lone"),
    _variant(request="GET / HTTP/1.1\r\nHost: h\r\n\r\n", response="HTTP/1.1 404 Not Found\r\n"),
    _variant(response="HTTP/2 2xx"),
    _variant(curl_command="curl x", matched_line=None, interaction={"q": 1}, meta=None),
    _variant(template=None, template_path="/root/x.yaml"),
    _variant(template_path=None, template=_DROP),
    _variant(ip="10.0.0.1."),
    _variant(templateID="x"),
    _variant(matched="https://other"),
    b'{"template-id": "x", "info": {"severity": "low"}, "host": "a", "host": "b"}\n',
    b'{"template-id": "x", "info": {"severity": "low", "name": "a\\u0000b"}}\n',
    b'{"template-id": "x", "info": {"severity": "low"}, "info": {"severity": "high"}, '
    b'"template-id": "y"}\n',
    b'{"template-id": "x", "info": {"severity": "low"}, "host": "caf\xc3\xa9"}\n',
    b'{"template-id": "x", "info": {"severity": "low"}, "host": "\xff"}\n',
    b'{"template-id": "x", "info": {"severity": "low"}, "x": NaN}\n',
    b'{"template-id": "x", "info": {"severity": "low"}\n',
    b'{"template-id": "x", "info": {"severity": "low"}} trailing\n',
]


def _lines() -> list[bytes]:
    found: list[bytes] = []
    for folder in (SAMPLES, FIXTURES):
        for path in sorted(folder.glob("*.jsonl")):
            found += path.read_bytes().splitlines(keepends=True)
    return found + EDGE


def _decoded(line: bytes) -> object:
    try:
        return json.loads(line.decode("utf-8"))
    except ValueError:
        return None


def test_every_line_parses_alike_on_both_paths(tmp_path: Path) -> None:
    from benchmarks.findings_bench import generate

    bench = tmp_path / "bench.jsonl"
    generate(bench, 600)
    lines = _lines() + bench.read_bytes().splitlines(keepends=True)
    fast, general = NucleiParser(), NucleiParser()
    taken = 0
    for number, line in enumerate(lines, 1):
        typed = fast.parse_line(line, number)
        if typed is None:
            continue
        taken += 1
        record = _decoded(line)
        assert isinstance(record, dict), line
        assert typed == general.parse(record, number), line
    assert taken >= 600  # the fast path is taken for plain generation C lines


@pytest.mark.parametrize(
    "path",
    [*sorted(SAMPLES.glob("*.jsonl")), *sorted(FIXTURES.glob("*.jsonl")), None],
    ids=lambda p: "edge-cases" if p is None else p.name,
)
def test_byte_and_text_streams_give_equal_events(path: Path | None) -> None:
    data = b"".join(EDGE) if path is None else path.read_bytes()
    as_bytes = list(parse_findings(io.BytesIO(data), "nuclei"))
    as_text = list(parse_findings(io.StringIO(data.decode("utf-8", "replace")), "nuclei"))
    if path is not None or b"\xff" not in data:
        assert as_bytes == as_text
    else:
        assert len(as_bytes) == len(as_text)


def test_the_fingerprint_written_out_equals_compute_fingerprint() -> None:
    lines = [
        *_lines(),
        _variant(extracted_results=["tls13", "tls12", 7]),
        _variant(matcher_name="m", extractor_name="e", extracted_results=["b", "a"]),
        _variant(matched_at="https://H.example.test.:8443/ü?q#f", template_id="x\udc00"),
    ]
    parser = NucleiParser()
    checked = 0
    for number, line in enumerate(lines, 1):
        record = _decoded(line)
        if not isinstance(record, dict):
            continue
        found = parser.parse(record, number)
        if not isinstance(found, ParsedFinding):
            continue
        checked += 1
        qualifiers = (
            found.matcher_name or "",
            found.extractor_name or "",
            *sorted(found.extracted_results),
        )
        location = target_of(found.matched_at or found.url or found.host).location
        assert found.fingerprint == compute_fingerprint(
            "nuclei", found.rule_id, location, qualifiers
        ), line
    assert checked >= 20
