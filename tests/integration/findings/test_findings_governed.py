"""``findings.import`` and ``resources.*`` through the governed runtime of an ``aifr init`` project."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from aifr.app import App, build_app
from aifr.config.project import init_project
from aifr.findings.importer import IMPORT_PROGRESS
from aifr.invocation import Status

SAMPLES = Path(__file__).resolve().parents[3] / ".." / "shared" / "samples" / "scanners"
NUCLEI_V3 = SAMPLES / "nuclei" / "nuclei-v3.jsonl"


@pytest.fixture
def app(tmp_path: Path, clean_env: dict[str, str]) -> Iterator[App]:
    project = tmp_path / "proj"
    init_project(project)
    built = build_app(project, require_project=True)
    yield built
    built.close()


def _big_file(root: Path, lines: int) -> Path:
    """``lines`` distinct nuclei results (one sample line with a new template id each)."""
    record = json.loads(NUCLEI_V3.read_text().splitlines()[0])
    path = root / "big.jsonl"
    with path.open("w") as out:
        for i in range(lines):
            record["template-id"] = f"t-{i}"
            out.write(json.dumps(record) + "\n")
    return path


def test_an_import_reports_its_progress_to_the_caller_through_the_runtime(app: App) -> None:
    big = _big_file(app.settings.project_dir, 25_000)  # progress every 5,000 findings
    seen: list[tuple[int, int]] = []
    token = IMPORT_PROGRESS.set(lambda done, total: seen.append((done, total)))
    try:
        result = app.runtime.invoke(
            "findings.import", {"project": "acme", "path": "big.jsonl"}, "alice"
        )
    finally:
        IMPORT_PROGRESS.reset(token)
    assert result.status is Status.OK, result.error
    assert result.output["imported"] == 25_000
    size = big.stat().st_size
    assert len(seen) >= 4 and all(total == size for _, total in seen)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert 0 < seen[0][0] < size and seen[-1] == (size, size)


def test_the_import_counts_and_the_resource_are_in_the_audit_record(app: App) -> None:
    (app.settings.project_dir / "scan.jsonl").write_bytes(NUCLEI_V3.read_bytes())
    added = app.runtime.invoke(
        "resources.add", {"project": "acme", "value": "https://shop.example.test"}, "alice"
    )
    assert added.status is Status.OK and added.output["added"] is True
    again = app.runtime.invoke(
        "resources.add", {"project": "acme", "value": "https://shop.example.test"}, "bob"
    )
    assert again.output["added"] is False and again.output["id"] == added.output["id"]
    imported = app.runtime.invoke(
        "findings.import", {"project": "acme", "path": "scan.jsonl", "run": "r1"}, "alice"
    )
    assert imported.status is Status.OK, imported.error
    records = [r for r in app.ledger.records() if r.event.kind == "invocation"]
    by_capability = {r.event.capability_id: r.event for r in records}
    details = by_capability["findings.import"].details["findings"]
    assert isinstance(details, dict)
    assert details["run"] == "r1" and details["imported"] == 8 and details["duplicates"] == 0
    assert details["file"] == "scan.jsonl" and details["linked_to_resources"] == 4
    assert by_capability["findings.import"].principal == "alice"
    resource = by_capability["resources.add"].details["findings"]
    assert isinstance(resource, dict) and resource["value"] == "https://shop.example.test"


def test_reserved_state_cannot_be_imported(app: App) -> None:
    refused = app.runtime.invoke(
        "findings.import", {"project": "acme", "path": ".aifr/aifr.db"}, "alice"
    )
    assert refused.status is Status.FAILED
    assert refused.error is not None and refused.error.details.get("rule") == "path_reserved"
