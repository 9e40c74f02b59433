"""Parser behaviour the goldens do not show by themselves: streaming, recovery, detection."""

from __future__ import annotations

import io
import json
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from aifr.errors import ErrorCode, FindingsError
from aifr.findings import ParsedFinding, ParseProblem, SkippedRecord
from aifr.findings.parsers import detect_record, detect_scanner, parse_findings
from findings_kit import FIXTURES, SAMPLES

V3 = [
    json.loads(line) for line in (SAMPLES / "nuclei" / "nuclei-v3.jsonl").read_text().splitlines()
]


def _findings(data: bytes | str, scanner: str = "auto") -> list[ParsedFinding]:
    stream = io.BytesIO(data) if isinstance(data, bytes) else io.StringIO(data)
    return [e for e in parse_findings(stream, scanner) if isinstance(e, ParsedFinding)]


def _events(data: bytes, scanner: str = "auto") -> list[object]:
    return list(parse_findings(io.BytesIO(data), scanner))


def _by_rule(path: str) -> dict[tuple[str, str | None], str]:
    found = _findings((SAMPLES / path).read_bytes())
    return {(f.rule_id, f.matcher_name): f.fingerprint for f in found}


def test_one_result_has_one_fingerprint_across_nuclei_generations() -> None:
    legacy = _by_rule("nuclei/nuclei-v2-legacy.jsonl")  # templateID / matched
    current = _by_rule("nuclei/nuclei-v3.jsonl")  # template-id / matched-at
    assert legacy[("git-config", None)] == current[("git-config", None)]


def test_fingerprints_are_stable_across_imports_and_ignore_volatile_fields() -> None:
    record = dict(V3[0])
    first = _findings(json.dumps(record).encode())[0]
    again = _findings(json.dumps(record).encode())[0]
    record.update(
        timestamp="2030-01-01T00:00:00Z",
        ip="10.99.99.99",
        request="GET / HTTP/1.1\r\nX-Request-Id: 42\r\n\r\n",
        response="HTTP/1.1 200 OK\r\nDate: Tue, 01 Jan 2030 00:00:00 GMT\r\n\r\n",
    )
    record["template-path"] = "/elsewhere/git-config.yaml"
    record["curl-command"] = "curl other"
    later = _findings(json.dumps(record).encode())[0]
    assert first.fingerprint == again.fingerprint == later.fingerprint


def test_another_matcher_or_extracted_value_at_one_location_is_another_finding() -> None:
    nginx, bootstrap = V3[2], V3[3]
    assert nginx["matched-at"] == bootstrap["matched-at"]
    prints = {f.fingerprint for f in _findings(json.dumps(nginx) + "\n" + json.dumps(bootstrap))}
    assert len(prints) == 2
    export = SAMPLES / "nuclei" / "nuclei-v3.0-json-export-defectdojo-multiple_v3.json"
    tls = [f for f in _findings(export.read_bytes()) if f.rule_id == "tls-version"]
    assert [f.extracted_results for f in tls] == [("tls12",), ("tls13",)]
    assert tls[0].fingerprint != tls[1].fingerprint


def test_a_url_written_with_other_case_or_its_default_port_is_the_same_location() -> None:
    findings = _findings((FIXTURES / "feroxbuster" / "feroxbuster-2.12.jsonl").read_bytes())
    login = [f for f in findings if f.path == "/v1/login"]
    assert len(login) == 2
    assert login[0].url != login[1].url
    assert login[0].fingerprint == login[1].fingerprint


def test_a_byte_order_mark_crlf_blank_lines_and_no_final_newline_are_accepted() -> None:
    lines = [json.dumps(V3[0]), "", "   ", json.dumps(V3[1])]
    data = b"\xef\xbb\xbf" + "\r\n".join(lines).encode()
    assert [f.rule_id for f in _findings(data)] == ["git-config", "CVE-2021-41773"]
    assert [f.line for f in _findings(data)] == [1, 4]


def test_text_streams_parse_like_binary_ones() -> None:
    text = "\n".join(json.dumps(r) for r in V3)
    as_text = [f.to_json() for f in _findings(text)]
    as_bytes = [f.to_json() for f in _findings(text.encode())]
    assert as_text == as_bytes
    assert len(as_text) == len(V3)
    pretty = json.dumps(V3, indent=2)
    assert [f.to_json() for f in _findings(pretty)] == [
        {**f, "line": f2.line} for f, f2 in zip(as_bytes, _findings(pretty), strict=True)
    ]


def test_a_json_array_record_larger_than_the_read_buffer_is_parsed_whole() -> None:
    big = dict(V3[0], response="HTTP/1.1 200 OK\r\n\r\n" + "é" * 1_500_000 + "€")
    data = json.dumps([V3[1], big, V3[2]], indent=2, ensure_ascii=False).encode()
    found = _findings(data)
    assert [f.rule_id for f in found] == ["CVE-2021-41773", "git-config", "tech-detect"]
    assert found[1].evidence["response"] == big["response"]


def test_an_unclosed_array_is_reported_after_its_complete_records() -> None:
    data = (json.dumps(V3[:2], indent=2)[:-1]).encode()  # drop the closing bracket
    events = _events(data)
    assert [type(e) for e in events] == [ParsedFinding, ParsedFinding, ParseProblem]
    problem = events[-1]
    assert isinstance(problem, ParseProblem)
    assert "not closed" in problem.reason


def test_a_malformed_line_is_reported_with_its_number_and_the_rest_is_parsed() -> None:
    data = "\n".join([json.dumps(V3[0]), '{"template-id": "x", oops}', json.dumps(V3[1])])
    events = _events(data.encode())
    assert [type(e) for e in events] == [ParsedFinding, ParseProblem, ParsedFinding]
    problem = events[1]
    assert isinstance(problem, ParseProblem)
    assert problem.line == 2
    assert problem.reason.startswith("malformed JSON")


def test_invalid_utf8_in_a_line_is_a_problem_of_that_line_only() -> None:
    data = json.dumps(V3[0]).encode() + b"\n" + b'{"template-id": "\xff\xfe"}\n'
    events = _events(data + json.dumps(V3[1]).encode())
    assert [type(e) for e in events] == [ParsedFinding, ParseProblem, ParsedFinding]


def test_non_finding_records_come_back_skipped_with_their_reason() -> None:
    data = (SAMPLES / "feroxbuster" / "feroxbuster-pre2.5-collected.jsonl").read_bytes()
    skipped = [e for e in _events(data) if isinstance(e, SkippedRecord)]
    assert [(s.line, s.kind) for s in skipped] == [(2, "response"), (3, "statistics")]
    assert "wildcard" in skipped[0].reason


def test_the_scanner_version_comes_from_feroxbuster_configuration_line() -> None:
    found = _findings((FIXTURES / "feroxbuster" / "feroxbuster-2.12.jsonl").read_bytes())
    assert {f.scanner_version for f in found} == {"2.12.0"}


def test_detection_reads_content_not_the_file_name_and_rewinds_the_stream() -> None:
    data = (SAMPLES / "katana" / "katana-v1.jsonl").read_bytes()
    stream = io.BytesIO(data)
    stream.name = "results-nuclei.json"  # type: ignore[misc]  # a misleading name must not matter
    found = detect_scanner(stream)
    assert (found.scanner, found.generation, found.container) == ("katana", "B", "jsonl")
    assert stream.tell() == 0
    assert len(_findings(stream.read())) == 6


def test_detection_of_unknown_content_is_refused_with_its_code() -> None:
    with pytest.raises(FindingsError) as caught:
        detect_scanner(io.BytesIO(b'{"name": "not a scanner"}\n[1, 2]\n'))
    assert caught.value.code is ErrorCode.FINDINGS_UNKNOWN_FORMAT


def test_an_unknown_scanner_name_is_refused_with_its_code() -> None:
    with pytest.raises(FindingsError) as caught:
        parse_findings(io.BytesIO(b""), "zap")
    assert caught.value.code is ErrorCode.FINDINGS_UNKNOWN_FORMAT


def test_an_explicit_scanner_reports_records_of_another_tool_as_problems() -> None:
    data = (SAMPLES / "katana" / "katana-v1.jsonl").read_bytes()
    events = _events(data, "nuclei")
    assert all(isinstance(e, ParseProblem) for e in events)
    assert isinstance(events[0], ParseProblem)
    assert events[0].reason == "a katana record in nuclei output"


def test_every_generation_is_recognised_from_its_keys() -> None:
    assert detect_record({"template": "x", "matched": "h", "severity": "low"}) == ("nuclei", "A")
    assert detect_record({"templateID": "x", "info": {}}) == ("nuclei", "B")
    assert detect_record({"template-id": "x", "info": {}}) == ("nuclei", "C")
    assert detect_record({"type": "response", "url": "u", "status": 200}) == (
        "feroxbuster",
        "v1.7",
    )
    assert detect_record({"endpoint": "u", "source": "s"}) == ("katana", "A")
    assert detect_record({"request": {"endpoint": "u"}}) == ("katana", "B")
    assert detect_record({"type": "http", "host": "h"}) is None


class _FailingStream(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        raise OSError(5, "Input/output error")


def test_a_read_failure_is_a_parse_failed_error() -> None:
    with pytest.raises(FindingsError) as caught:
        list(parse_findings(io.BufferedReader(_FailingStream())))
    assert caught.value.code is ErrorCode.FINDINGS_PARSE_FAILED


class _Generated(io.RawIOBase):
    """A large scanner output produced on the fly, so the test itself holds none of it."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            self._pending = next(self._chunks, b"")
            if not self._pending:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _record(i: int) -> dict[str, object]:
    # A distinct location and a 2 KB response per record, as real nuclei output has.
    body = f"HTTP/1.1 200 OK\r\n\r\n{i:08d}" + "x" * 2048
    return dict(V3[i % len(V3)], **{"matched-at": f"https://h.example.test/{i}", "response": body})


def _array_chunks(count: int) -> Iterator[bytes]:
    yield b"[\n"
    for i in range(count):
        record = _record(i)
        yield json.dumps(record, indent=2).encode() + (b",\n" if i < count - 1 else b"\n")
    yield b"]\n"


def _line_chunks(count: int) -> Iterator[bytes]:
    for i in range(count):
        record = _record(i)
        yield json.dumps(record).encode() + b"\n"


@pytest.mark.parametrize("chunks", [_array_chunks, _line_chunks], ids=["array", "jsonl"])
def test_parsing_holds_constant_memory_whatever_the_input_size(chunks: object) -> None:
    count = 3_000  # about 10 MB of input; the parser holds a 256 KiB window and bounded caches
    make = chunks  # type: ignore[assignment]
    stream = io.BufferedReader(_Generated(make(count)))  # type: ignore[operator]
    tracemalloc.start()
    try:
        seen = 0
        for event in parse_findings(stream):
            assert isinstance(event, ParsedFinding)
            seen += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == count
    assert peak < 3 * 1024 * 1024  # well under the input size (10 MB and more)


def test_results_of_one_template_with_changed_info_never_reuse_stale_fields() -> None:
    first = dict(V3[1])  # CVE-2021-41773, high, classified
    changed_info = dict(
        first["info"],
        severity="low",
        tags=["other"],
        reference=["https://example.test/advisory"],
        classification={"cve-id": ["cve-2099-0001"], "cwe-id": None, "cvss-score": 3.1},
        author="someone",
        extra="kept",
    )
    second = dict(first, info=changed_info)
    third = dict(first, info=dict(first["info"], severity="critical"))
    lines = "\n".join(json.dumps(r) for r in (first, second, third, first))
    a, b, c, d = _findings(lines)
    assert (a.severity, b.severity, c.severity, d.severity) == ("high", "low", "critical", "high")
    assert b.tags == ("other",)
    assert b.references == ("https://example.test/advisory",)
    assert (b.cve, b.cwe, b.cvss_score) == (("CVE-2099-0001",), (), 3.1)
    assert b.rule_metadata["author"] == ["someone"]
    assert b.raw["info"] == {"extra": "kept"}
    assert "info" not in c.raw
    assert c.tags == a.tags
    assert c.cve == a.cve == ("CVE-2021-41773",)
    assert d.to_json() == {**a.to_json(), "line": 4}


def test_a_line_longer_than_the_record_limit_is_skipped_without_losing_line_numbers() -> None:
    good = json.dumps(V3[0])
    huge = json.dumps(dict(V3[1], response="x" * 5000))
    data = "\n".join([good, huge, good.replace("git-config", "after")]).encode()
    events = list(parse_findings(io.BytesIO(data), max_record_bytes=len(good) + 10))
    assert [type(e) for e in events] == [ParsedFinding, ParseProblem, ParsedFinding]
    problem, after = events[1], events[2]
    assert isinstance(problem, ParseProblem) and isinstance(after, ParsedFinding)
    assert (problem.line, after.line) == (2, 3)
    assert "larger than" in problem.reason
    assert after.rule_id == "after"


def test_a_record_that_fits_the_limit_with_its_line_end_is_read_and_one_byte_more_is_not() -> None:
    good = json.dumps(V3[0])
    longer = good.replace('"git-config"', '"git-configs"', 1)
    data = "\n".join([good, longer, good, ""]).encode()
    events = list(parse_findings(io.BytesIO(data), max_record_bytes=len(good) + 1))
    assert [(type(e), e.line) for e in events] == [
        (ParsedFinding, 1),
        (ParseProblem, 2),
        (ParsedFinding, 3),
    ]


def test_a_whole_file_value_larger_than_the_limit_is_skipped_and_the_next_one_read() -> None:
    records = [V3[0], dict(V3[1], response="y" * 600_000), V3[2]]
    data = json.dumps(records, indent=2).encode()
    events = list(parse_findings(io.BytesIO(data), max_record_bytes=300_000))
    kinds = [type(e) for e in events]
    assert kinds == [ParsedFinding, ParseProblem, ParsedFinding]
    assert "larger than" in events[1].reason  # type: ignore[union-attr]


def test_recovery_after_a_malformed_record_finds_the_next_one_beyond_the_read_window() -> None:
    big = json.dumps(dict(V3[1], response="z" * 700_000), indent=2)
    broken = big.replace('"template-id": "CVE-2021-41773",', '"template-id": "CVE-2021-41773"', 1)
    text = (
        "[\n"
        + ",\n".join([json.dumps(V3[0], indent=2), broken, json.dumps(V3[2], indent=2)])
        + "\n]\n"
    )
    events = list(parse_findings(io.BytesIO(text.encode())))
    assert [type(e) for e in events] == [ParsedFinding, ParseProblem, ParsedFinding]
    assert events[2].rule_id == "tech-detect"  # type: ignore[union-attr]


def test_lone_surrogate_escapes_become_text_so_the_finding_validates_and_exports() -> None:
    record = dict(V3[0], info=dict(V3[0]["info"], name="Git \ud800 config"))
    record["matched-at"] = "https://shop.example.test/\udcff"
    record["response"] = "body \ud83d\ude00 and \udc00"
    line = json.dumps(record)  # ensure_ascii: every surrogate is written as a \\u escape
    for data in (line, json.dumps([record], indent=2)):
        found = _findings(data.encode())
        assert len(found) == 1
        parsed = found[0]
        assert parsed.title == "Git \\ud800 config"
        assert parsed.evidence["response"] == "body \U0001f600 and \\udc00"
        finding = parsed.to_finding(project_id="acme", run_id="r1", seen_at=datetime.now(UTC))
        finding.model_dump_json()
        assert finding.matched_at == "https://shop.example.test/\\udcff"


def test_a_nul_in_scanner_text_is_kept_as_escape_text_every_store_accepts() -> None:
    record = dict(V3[0], info=dict(V3[0]["info"], name="Git\u0000config"))
    found = _findings(json.dumps(record).encode())
    assert found[0].title == "Git\\u0000config"
    assert not any("\x00" in str(v) for v in found[0].to_json().values())


@pytest.mark.parametrize("data", [b"", b"\n\n  \r\n", b"\xef\xbb\xbf", b"[]", b"[\n]\n"])
def test_an_empty_output_parses_to_nothing_and_is_not_detected(data: bytes) -> None:
    assert list(parse_findings(io.BytesIO(data))) == []
    with pytest.raises(FindingsError) as caught:
        detect_scanner(io.BytesIO(data))
    assert caught.value.code is ErrorCode.FINDINGS_UNKNOWN_FORMAT
