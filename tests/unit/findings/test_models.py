"""The findings models: frozen, strict, and the invariants they keep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pydantic
import pytest

from aifr.errors import ErrorCode, FindingsError
from aifr.findings import (
    Finding,
    ParsedFinding,
    Project,
    Run,
    Severity,
    TriageState,
    check_run_of_project,
    finding_id,
)

NOW = datetime(2026, 10, 2, 9, 0, tzinfo=UTC)


def _parsed() -> ParsedFinding:
    return ParsedFinding(
        line=1,
        scanner="nuclei",
        scanner_generation="C",
        rule_id="git-config",
        title="Git Config",
        severity=Severity.MEDIUM,
        fingerprint="ab" * 32,
        url="https://shop.example.test/.git/config",
        tags=("git",),
    )


def test_a_parsed_finding_becomes_a_validated_finding_of_its_project_and_run() -> None:
    finding = _parsed().to_finding(project_id="acme", run_id="r1", seen_at=NOW)
    assert finding.id == finding_id("acme", "ab" * 32)
    assert (finding.run_id, finding.last_run_id) == ("r1", "r1")
    assert finding.first_seen == finding.last_seen == NOW
    assert finding.occurrences == 1
    assert finding.triage_state is TriageState.OPEN
    assert Finding.model_validate_json(finding.model_dump_json()) == finding


def test_finding_ids_differ_between_projects_for_one_fingerprint() -> None:
    assert finding_id("a", "ab" * 32) != finding_id("b", "ab" * 32)
    assert len(finding_id("a", "ab" * 32)) == 32


def test_a_finding_refuses_unknown_fields_and_is_frozen() -> None:
    finding = _parsed().to_finding(project_id="acme", run_id="r1", seen_at=NOW)
    data = finding.model_dump()
    data["colour"] = "red"
    with pytest.raises(pydantic.ValidationError):
        Finding.model_validate(data)
    with pytest.raises(pydantic.ValidationError):
        finding.title = "changed"  # type: ignore[misc]


def test_a_finding_last_seen_before_first_seen_is_refused() -> None:
    data = _parsed().to_finding(project_id="acme", run_id="r1", seen_at=NOW).model_dump()
    data["last_seen"] = NOW - timedelta(seconds=1)
    with pytest.raises(pydantic.ValidationError, match="last_seen"):
        Finding.model_validate(data)


def test_a_bad_fingerprint_or_naive_timestamp_is_refused() -> None:
    data = _parsed().to_finding(project_id="acme", run_id="r1", seen_at=NOW).model_dump()
    with pytest.raises(pydantic.ValidationError):
        Finding.model_validate({**data, "fingerprint": "not-hex"})
    with pytest.raises(pydantic.ValidationError):
        Finding.model_validate({**data, "first_seen": datetime(2026, 1, 1)})


def test_a_finding_whose_run_is_of_another_project_is_refused() -> None:
    finding = _parsed().to_finding(project_id="acme", run_id="r1", seen_at=NOW)
    own = Run(id="r1", project_id="acme", started_at=NOW)
    foreign = Run(id="r1", project_id="other", started_at=NOW)
    check_run_of_project(finding, {"r1": own})
    with pytest.raises(FindingsError) as caught:
        check_run_of_project(finding, {"r1": foreign})
    assert caught.value.code is ErrorCode.FINDINGS_INVALID
    with pytest.raises(FindingsError):
        check_run_of_project(finding, {})


def test_ids_with_spaces_or_slashes_are_refused() -> None:
    with pytest.raises(pydantic.ValidationError):
        Project(id="a b", name="x", created_at=NOW)
    with pytest.raises(pydantic.ValidationError):
        Project(id="../etc", name="x", created_at=NOW)
    with pytest.raises(pydantic.ValidationError):
        Run(id="r", project_id="p", started_at=NOW, finished_at=NOW - timedelta(1))
