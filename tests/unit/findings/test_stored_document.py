"""The stored document of an imported finding reads back as the validated model would be.

The import hot path never builds a :class:`~aifr.findings.models.Finding`: the SQL stores
write the columns and a document encoded straight from the parser record (msgspec,
``omit_defaults``). These tests hold that path to the validated one
(:meth:`ParsedFinding.to_finding`) for every sample and fixture, and hold the stored
fingerprints and ids to the committed goldens, which the code before this path wrote.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from aifr.findings import ParsedFinding
from aifr.findings.importer import import_findings
from aifr.findings.models import finding_id
from aifr.findings.parsers import parse_findings
from aifr.findings.ports import FindingFilter
from aifr.findings.severity import Severity
from aifr.storage.findings_rows import finding_from_row, parsed_row, parsed_rows, stamp
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.findings import SqliteFindingStore, SqliteResourceRegistry
from findings_kit import golden_path, inputs

INPUTS = inputs()
SEEN = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def _parsed(source: Path) -> list[ParsedFinding]:
    with source.open("rb") as stream:
        return [e for e in parse_findings(stream) if isinstance(e, ParsedFinding)]


def _stored(parsed: ParsedFinding, resource_id: str | None = None) -> object:
    return finding_from_row(parsed_row(parsed, resource_id, "acme", "run-1", stamp(SEEN)))


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_stored_row_reads_back_as_the_validated_finding(source: Path) -> None:
    for parsed in _parsed(source):
        expected = parsed.to_finding(project_id="acme", run_id="run-1", seen_at=SEEN)
        assert _stored(parsed) == expected


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fingerprints_and_ids_equal_the_committed_goldens(source: Path) -> None:
    golden = json.loads(golden_path(source).read_text(encoding="utf-8"))
    pinned = [e["finding"]["fingerprint"] for e in golden["events"] if "finding" in e]
    parsed = _parsed(source)
    assert [p.fingerprint for p in parsed] == pinned
    assert [parsed_row(p, None, "acme", "run-1", "x")[0] for p in parsed] == [
        finding_id("acme", f) for f in pinned
    ]


def test_a_sample_imported_into_sqlite_lists_as_the_validated_findings(tmp_path: Path) -> None:
    source = next(p for p in INPUTS if p.name == "nuclei-v3.jsonl")
    store = SqliteFindingStore(SqliteDatabase(tmp_path / "aifr.db"))
    with source.open("rb") as stream:
        summary = import_findings(
            store, SqliteResourceRegistry(store), stream, project_id="acme", run_id="run-1"
        )
    listed = store.list_findings(FindingFilter(project_id="acme"), limit=10_000).findings
    expected: dict[str, object] = {}
    for parsed in _parsed(source):
        found = parsed.to_finding(project_id="acme", run_id="run-1", seen_at=listed[0].first_seen)
        expected.setdefault(found.id, found)
    assert summary.imported == len(expected) > 0
    assert {f.id: f.model_copy(update={"occurrences": 1}) for f in listed} == expected


def _record(**values: object) -> ParsedFinding:
    base: dict[str, object] = {
        "line": 7,
        "scanner": "nuclei",
        "scanner_generation": "C",
        "rule_id": "r",
        "title": "t",
        "severity": Severity.HIGH,
        "fingerprint": "f" * 64,
    }
    return ParsedFinding(**cast("dict[str, Any]", {**base, **values}))


@pytest.mark.parametrize(
    "values",
    [
        {"port": 0, "cvss_score": 0.0, "description": "", "status_code": 0},
        {"extracted_results": ("a",), "raw": {"empty": [], "zero": 0, "no": False}},
        {"raw": {"big": 2**70, "small": -(2**64)}},
        {"raw": {"nan": float("nan")}, "cvss_score": None},
        {"title": "bad \ud800 name", "raw": {"odd": "\udc00", "big": 2**70}},
        {"observed_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)},
        {"evidence": {"nested": {"deep": [1, 2.5, None, "x"]}}, "tags": ("a", "b")},
        {"title": 'x,"scanner_generation":"Z', "url": 'https://a.test/,"scanner_generation":'},
    ],
    ids=[
        "falsy-kept",
        "lists",
        "big-ints",
        "nan",
        "lone-surrogates",
        "timestamp",
        "nested",
        "the-cut-text-in-a-value",
    ],
)
def test_odd_values_store_as_the_validated_path_reads_them(values: dict[str, object]) -> None:
    parsed = _record(**values)
    doc = json.loads(parsed_row(parsed, None, "acme", "run-1", stamp(SEEN))[16])
    in_columns = {"line", "fingerprint", "scanner", "rule_id", "title", "severity", "url", "host"}
    assert not in_columns & doc.keys()
    assert doc["scanner_generation"] == "C"
    stored = _stored(parsed)
    if "raw" in values and "nan" in values["raw"]:  # type: ignore[operator]  # a dict above
        assert stored.raw == {"nan": None}  # type: ignore[attr-defined]  # a Finding
        return
    if "\ud800" in str(values.get("title")):
        assert stored.title.startswith("bad \ufffd")  # type: ignore[attr-defined]  # a Finding
        assert stored.raw == {"odd": "\ufffd", "big": 2**70}  # type: ignore[attr-defined]  # a Finding
        return
    assert stored == parsed.to_finding(project_id="acme", run_id="run-1", seen_at=SEEN)


def test_one_row_builder_for_many_records_gives_each_record_its_own_row() -> None:
    # The builder reuses one buffer: a long document then a short one must not mix.
    parsed = [p for source in INPUTS for p in _parsed(source)]
    parsed += list(reversed(parsed))
    build = parsed_rows("acme", "run-1", stamp(SEEN))
    rows = [build(p, "res-1" if i % 2 else None) for i, p in enumerate(parsed)]
    assert rows == [
        parsed_row(p, "res-1" if i % 2 else None, "acme", "run-1", stamp(SEEN))
        for i, p in enumerate(parsed)
    ]
    assert [r[0] for r in rows] == [finding_id("acme", p.fingerprint) for p in parsed]
    assert all(json.loads(cast(str, r[16])) for r in rows)
