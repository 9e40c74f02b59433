"""Hostile input: the parsers never raise, report every bad line, and emit only valid findings."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aifr.findings import ParsedFinding, ParseProblem, SkippedRecord
from aifr.findings.parsers import parse_findings

NOW = datetime(2026, 10, 2, 9, 0, tzinfo=UTC)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["https://a.example.test/x", "b.example.test:22", "HIGH", "7.5", "-1", ""]),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_NUCLEI_KEYS = [
    "template-id",
    "templateID",
    "template",
    "info",
    "matched-at",
    "matched",
    "host",
    "url",
    "port",
    "scheme",
    "ip",
    "timestamp",
    "matcher-name",
    "matcher_name",
    "extracted-results",
    "extracted_results",
    "request",
    "response",
    "type",
    "template-url",
]
_INFO_KEYS = ["name", "severity", "tags", "author", "reference", "classification", "description"]
_CLASS_KEYS = ["cve-id", "cwe-id", "cvss-score", "cvss-metrics"]


def _record_strategy() -> st.SearchStrategy[dict[str, Any]]:
    classification = st.dictionaries(st.sampled_from(_CLASS_KEYS), _values, max_size=4)
    info = st.dictionaries(st.sampled_from(_INFO_KEYS), _values, max_size=6).flatmap(
        lambda d: classification.map(lambda c: {**d, "classification": c})
    )
    nuclei = st.dictionaries(st.sampled_from(_NUCLEI_KEYS), _values, max_size=10).flatmap(
        lambda d: st.tuples(
            info, st.sampled_from(["template-id", "templateID", "template"]), st.text(max_size=10)
        ).map(lambda t: {**d, "info": t[0], t[1]: t[2]})
    )
    ferox = st.dictionaries(
        st.sampled_from(
            ["url", "status", "wildcard", "method", "path", "timestamp", "headers", "truncated"]
        ),
        _values,
        max_size=8,
    ).map(lambda d: {**d, "type": "response", "url": d.get("url", "https://f.example.test/")})
    katana = st.dictionaries(
        st.sampled_from(["method", "endpoint", "tag", "source", "body"]), _values, max_size=5
    ).flatmap(
        lambda req: st.dictionaries(
            st.sampled_from(["status_code", "headers", "body"]), _values, max_size=3
        ).map(
            lambda resp: {
                "request": {**req, "endpoint": req.get("endpoint", "https://k.example.test/")},
                "response": resp,
            }
        )
    )
    return st.one_of(nuclei, ferox, katana)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_record_strategy(), min_size=1, max_size=5))
def test_any_record_of_any_shape_parses_to_a_valid_finding_or_a_reported_problem(
    records: list[dict[str, Any]],
) -> None:
    for record in records:  # one stream per record: each may be of another tool
        data = json.dumps(record).encode() + b"\n"
        events = list(parse_findings(io.BytesIO(data)))
        assert len(events) == 1
        event = events[0]
        assert isinstance(event, ParsedFinding | ParseProblem | SkippedRecord)
        if isinstance(event, ParsedFinding):
            finding = event.to_finding(project_id="acme", run_id="r1", seen_at=NOW)
            assert finding.fingerprint == event.fingerprint


@settings(max_examples=100, deadline=None)
@given(
    lines=st.lists(
        st.binary(max_size=60).filter(lambda b: b"\n" not in b and b"\r" not in b),
        min_size=1,
        max_size=8,
    )
)
def test_arbitrary_bytes_never_raise_and_each_line_gives_at_most_one_event(
    lines: list[bytes],
) -> None:
    data = b"\n".join([b"garbage", *lines])  # a first line that is not [ or { keeps JSON Lines mode
    events = list(parse_findings(io.BytesIO(data)))
    assert len(events) <= len(lines) + 1
    assert all(isinstance(e, ParsedFinding | ParseProblem | SkippedRecord) for e in events)
    assert isinstance(events[0], ParseProblem)
    assert events[0].line == 1


@settings(max_examples=100, deadline=None)
@given(cut=st.integers(min_value=1, max_value=2000))
def test_a_json_array_cut_anywhere_reports_problems_and_keeps_the_complete_records(
    cut: int,
) -> None:
    records = [
        {
            "template-id": f"t{i}",
            "info": {"name": "n", "severity": "low"},
            "matched-at": f"https://h.example.test/{i}",
        }
        for i in range(12)
    ]
    text = json.dumps(records, indent=2)
    data = text[: min(cut, len(text) - 1)].encode()
    events = list(parse_findings(io.BytesIO(data)))
    found = [e for e in events if isinstance(e, ParsedFinding)]
    assert [f.rule_id for f in found] == [f"t{i}" for i in range(len(found))]
    assert any(isinstance(e, ParseProblem) for e in events)
