"""Exports: JSON, CSV (formula-safe) and SARIF 2.1.0 validated against the official schema."""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aifr.errors import ErrorCode, FindingsError
from aifr.findings import Finding, ParsedFinding, Severity, TriageState
from aifr.findings.exporters import (
    CSV_COLUMNS,
    export_findings,
    sarif_level,
    write_csv,
    write_json,
    write_sarif,
)
from aifr.findings.parsers import parse_findings
from findings_kit import TESTS, inputs

NOW = datetime(2026, 10, 2, 9, 0, tzinfo=UTC)
SARIF_SCHEMA = TESTS / "fixtures" / "sarif" / "sarif-schema-2.1.0.json"


@functools.cache
def _all_findings() -> tuple[Finding, ...]:
    found: list[Finding] = []
    for source in inputs():
        for event in parse_findings(io.BytesIO(source.read_bytes())):
            if isinstance(event, ParsedFinding):
                found.append(event.to_finding(project_id="acme", run_id="r1", seen_at=NOW))
    return tuple(found)


def _with(finding: Finding, **changes: Any) -> Finding:
    return Finding.model_validate({**finding.model_dump(), **changes})


def _sarif(findings: Iterator[Finding] | tuple[Finding, ...]) -> dict[str, Any]:
    out = io.StringIO()
    write_sarif(iter(findings), out, tool_version="0.1.0")
    loaded: dict[str, Any] = json.loads(out.getvalue())
    return loaded


def test_sarif_of_every_sample_and_fixture_validates_against_the_official_schema() -> None:
    schema = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    findings = _all_findings()
    triaged = (
        _with(findings[0], triage_state=TriageState.FALSE_POSITIVE, title="=cmd|' /C calc'!A0"),
        _with(findings[1], url="https://shop.example.test/a path/é?q=1", matched_at=None),
    )
    log = _sarif(findings + triaged)
    validator = jsonschema.Draft4Validator(
        schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(log), key=lambda e: list(e.path))
    assert errors == [], errors[0].message if errors else ""
    assert log["version"] == "2.1.0"
    assert len(log["runs"][0]["results"]) == len(findings) + 2


def test_sarif_has_one_rule_per_scanner_rule_and_results_point_at_it() -> None:
    findings = _all_findings()
    run = _sarif(findings)["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert len(rules) == len({f"{f.scanner}/{f.rule_id}" for f in findings})
    assert len({rule["id"] for rule in rules}) == len(rules)
    for finding, result in zip(findings, run["results"], strict=True):
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["ruleId"] == f"{finding.scanner}/{finding.rule_id}"
        assert result["level"] == sarif_level(finding.severity)
        assert result["partialFingerprints"] == {"aifrFingerprint/v1": finding.fingerprint}


def test_sarif_levels_and_security_severity_follow_the_severity() -> None:
    base = _all_findings()[0]
    cases = {
        Severity.CRITICAL: ("error", "9.5"),
        Severity.HIGH: ("error", "8.0"),
        Severity.MEDIUM: ("warning", "5.5"),
        Severity.LOW: ("note", "2.0"),
        Severity.INFO: ("note", None),
        Severity.UNKNOWN: ("warning", None),
    }
    for severity, (level, score) in cases.items():
        finding = _with(base, severity=severity, cvss_score=None, rule_id=severity.value)
        rule = _sarif((finding,))["runs"][0]["tool"]["driver"]["rules"][0]
        assert rule["defaultConfiguration"]["level"] == level
        assert rule["properties"].get("security-severity") == score
        assert ("security" in rule["properties"].get("tags", [])) is (score is not None)
    rated = _with(base, severity=Severity.HIGH, cvss_score=7.5)
    rule = _sarif((rated,))["runs"][0]["tool"]["driver"]["rules"][0]
    assert rule["properties"]["security-severity"] == "7.5"


def test_urls_are_artifact_locations_and_other_targets_logical_locations() -> None:
    by_rule = {f.rule_id: f for f in _all_findings()}
    web, network = by_rule["git-config"], by_rule["openssh-detect"]
    results = _sarif((web, network))["runs"][0]["results"]
    assert results[0]["locations"] == [{"physicalLocation": {"artifactLocation": {"uri": web.url}}}]
    logical = results[1]["locations"][0]["logicalLocations"][0]
    assert logical["name"] == "shop.example.test:22"
    assert logical["kind"] == "resource"


def test_a_finding_triaged_false_positive_is_suppressed_in_sarif() -> None:
    finding = _with(_all_findings()[0], triage_state=TriageState.FALSE_POSITIVE)
    result = _sarif((finding,))["runs"][0]["results"][0]
    assert result["suppressions"][0]["kind"] == "external"
    assert "suppressions" not in _sarif((_all_findings()[0],))["runs"][0]["results"][0]


def test_json_export_round_trips_every_finding_as_array_and_as_lines() -> None:
    findings = _all_findings()
    out = io.StringIO()
    assert write_json(iter(findings), out) == len(findings)
    assert [Finding.model_validate(d) for d in json.loads(out.getvalue())] == list(findings)
    lines = io.StringIO()
    write_json(iter(findings), lines, lines=True)
    text = lines.getvalue().splitlines()
    assert [Finding.model_validate_json(line) for line in text] == list(findings)
    empty = io.StringIO()
    write_json(iter(()), empty)
    assert json.loads(empty.getvalue()) == []


@pytest.mark.parametrize(
    "hostile",
    ['=HYPERLINK("http://evil","x")', "+1+cmd", "-2+3", "@SUM(A1)", "\tTAB", "\r=1"],
)
def test_csv_cells_that_a_spreadsheet_would_evaluate_are_escaped(hostile: str) -> None:
    finding = _with(
        _all_findings()[0], title=hostile, extracted_results=(hostile, "ok"), matcher_name=hostile
    )
    out = io.StringIO()
    write_csv(iter((finding,)), out)
    row = next(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    for column in ("title", "matcher_name"):
        assert row[column] == "'" + hostile
    assert row["extracted_results"] == f"'{hostile}; ok"


def test_csv_has_one_header_and_one_row_per_finding_with_plain_numbers() -> None:
    findings = _all_findings()
    out = io.StringIO()
    assert write_csv(iter(findings), out) == len(findings)
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert len(rows) == len(findings)
    first = findings[0]
    assert rows[0]["severity"] == first.severity.value
    assert rows[0]["port"] == str(first.port)
    assert rows[0]["first_seen"] == NOW.isoformat()


def test_an_unknown_export_format_is_refused_with_its_code() -> None:
    with pytest.raises(FindingsError) as caught:
        export_findings("xml", iter(()), io.StringIO())
    assert caught.value.code is ErrorCode.FINDINGS_UNKNOWN_FORMAT
    out = io.StringIO()
    assert export_findings("sarif", iter(_all_findings()[:2]), out) == 2


_texts = st.text(max_size=30)
_urls = st.one_of(
    st.none(),
    _texts,
    st.builds(
        lambda host, path: f"https://{host}/{path}",
        st.text(min_size=1, max_size=12),
        st.text(max_size=20),
    ),
)


@settings(max_examples=80, deadline=None)
@given(
    title=st.text(min_size=1, max_size=30),
    rule_id=st.text(min_size=1, max_size=20),
    url=_urls,
    matched_at=_urls,
    host=st.one_of(st.none(), _texts),
    tags=st.lists(_texts, max_size=4),
    rule_url=_urls,
    severity=st.sampled_from(list(Severity)),
    cvss=st.one_of(st.none(), st.floats(min_value=0, max_value=10)),
)
def test_sarif_of_findings_with_arbitrary_text_still_validates(
    title: str,
    rule_id: str,
    url: str | None,
    matched_at: str | None,
    host: str | None,
    tags: list[str],
    rule_url: str | None,
    severity: Severity,
    cvss: float | None,
) -> None:
    finding = _with(
        _all_findings()[0],
        title=title,
        rule_id=rule_id,
        url=url,
        matched_at=matched_at,
        host=host,
        tags=tuple(tags),
        rule_url=rule_url,
        severity=severity,
        cvss_score=cvss,
    )
    log = _sarif((finding, finding))
    validator = jsonschema.Draft4Validator(
        _sarif_schema(), format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
    )
    errors = list(validator.iter_errors(log))
    assert errors == [], errors[0].message if errors else ""
    out = io.StringIO()
    write_csv(iter((finding,)), out)
    assert len(list(csv.reader(io.StringIO(out.getvalue(), newline="")))) == 2


@functools.cache
def _sarif_schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    return loaded
