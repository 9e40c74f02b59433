"""schemas/finding.json (version 1.0.0) and the Finding model agree, both ways."""

from __future__ import annotations

import copy
import functools
import io
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pydantic
import pytest

from aifr.findings import Finding, ParsedFinding
from aifr.findings.parsers import parse_findings
from aifr.findings.schema import build_finding_schema, load_finding_schema
from findings_kit import inputs

NOW = datetime(2026, 10, 2, 9, 0, tzinfo=UTC)


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        load_finding_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def _documents() -> list[dict[str, Any]]:
    return copy.deepcopy(_parsed_documents())


@functools.cache
def _parsed_documents() -> list[dict[str, Any]]:
    docs = []
    for source in inputs():
        with source.open("rb") as stream:
            for event in parse_findings(io.BytesIO(stream.read())):
                if isinstance(event, ParsedFinding):
                    finding = event.to_finding(project_id="acme", run_id="r1", seen_at=NOW)
                    docs.append(finding.model_dump(mode="json"))
    return docs


def test_the_committed_schema_is_the_one_generated_from_the_model() -> None:
    committed = load_finding_schema()
    assert committed["version"] == "1.0.0"
    assert committed == build_finding_schema(), (
        "schemas/finding.json is stale: run write_finding_schema() (see aifr.findings.schema)"
    )


def test_every_parsed_finding_validates_against_the_schema_and_the_model() -> None:
    validator = _validator()
    documents = _documents()
    assert len(documents) > 100
    for document in documents:
        validator.validate(document)
        assert Finding.model_validate(document).model_dump(mode="json") == document


@pytest.mark.parametrize(
    "change",
    [
        {"fingerprint": "not-a-sha256"},
        {"severity": "HIGH"},
        {"triage_state": "wontfix"},
        {"occurrences": 0},
        {"port": 70000},
        {"cvss_score": 11},
        {"colour": "red"},
        {"first_seen": "yesterday"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_a_document_the_schema_refuses_is_refused_by_the_model_too(change: dict[str, Any]) -> None:
    document = {**_documents()[0], **change}
    assert not _validator().is_valid(document)
    with pytest.raises(pydantic.ValidationError):
        Finding.model_validate(document)


@pytest.mark.parametrize("field", ["id", "project_id", "run_id", "fingerprint", "severity"])
def test_a_document_missing_a_required_field_is_refused_by_both(field: str) -> None:
    document = _documents()[0]
    del document[field]
    assert not _validator().is_valid(document)
    with pytest.raises(pydantic.ValidationError):
        Finding.model_validate(document)
