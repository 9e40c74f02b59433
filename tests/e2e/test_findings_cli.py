"""``aifr findings`` and ``aifr resources`` as a user runs them, on a project made by ``aifr init``."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "samples" / "scanners"
NUCLEI_V3 = SAMPLES / "nuclei" / "nuclei-v3.jsonl"


def run(
    aifr_bin: str, *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [aifr_bin, *args],
        cwd=cwd,
        env={**env, "COLUMNS": "40"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def project(tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]) -> Path:
    root = tmp_path / "proj"
    assert run(aifr_bin, "init", str(root), cwd=tmp_path, env=clean_env).returncode == 0
    return root


def flat(text: str) -> str:
    """Output with the 40-column wrapping undone."""
    return " ".join(text.split())


def as_json(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    loaded: dict[str, object] = json.loads(done.stdout)
    return loaded


def test_importing_a_file_twice_counts_the_second_as_duplicates(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    first = run(
        aifr_bin,
        "findings",
        "import",
        str(NUCLEI_V3),
        "--project",
        "acme",
        cwd=project,
        env=clean_env,
    )
    assert first.returncode == 0, first.stderr
    assert "imported" in first.stdout and "skipped: 0" in flat(first.stdout)
    second = as_json(
        run(aifr_bin, "findings", "import", str(NUCLEI_V3), "--project", "acme", "--run", "r2", "--json",
            cwd=project, env=clean_env)
    )  # fmt: skip
    listed = as_json(
        run(aifr_bin, "findings", "list", "--project", "acme", "--json", cwd=project, env=clean_env)
    )
    findings = listed["findings"]
    assert isinstance(findings, list) and second["imported"] == 0
    assert second["duplicates"] == second["findings"] and len(findings) > 0
    assert {f["occurrences"] for f in findings} >= {2}
    assert second["run"] == "r2" and second["scanner"] == "nuclei"
    in_r2 = as_json(
        run(
            aifr_bin,
            "findings",
            "list",
            "--project",
            "acme",
            "--run",
            "r2",
            "--json",
            cwd=project,
            env=clean_env,
        )
    )["findings"]
    assert isinstance(in_r2, list) and len(in_r2) == len(findings)


def test_a_malformed_line_is_reported_with_its_number_and_the_rest_imported(
    aifr_bin: str, project: Path, clean_env: dict[str, str], tmp_path: Path
) -> None:
    lines = NUCLEI_V3.read_text().splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([lines[0], '{"template-id": "x", "info": {', *lines[1:3]]) + "\n")
    done = run(
        aifr_bin, "findings", "import", str(broken), "--project", "acme", cwd=project, env=clean_env
    )
    assert done.returncode == 0, done.stderr
    assert "skipped: 1" in flat(done.stdout)
    assert "line 2 (malformed)" in flat(done.stdout)
    summary = as_json(
        run(
            aifr_bin,
            "findings",
            "import",
            str(broken),
            "--project",
            "acme",
            "--json",
            cwd=project,
            env=clean_env,
        )
    )
    assert summary["findings"] == 3 and summary["skipped"] == 1
    assert summary["skipped_lines"] == [
        {"line": 2, "reason": summary["skipped_lines"][0]["reason"], "malformed": True}
    ]  # type: ignore[index]


def test_triage_goes_through_policy_and_audit_and_is_kept_with_its_author(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    run(
        aifr_bin,
        "findings",
        "import",
        str(NUCLEI_V3),
        "--project",
        "acme",
        cwd=project,
        env=clean_env,
    )
    listed = as_json(
        run(aifr_bin, "findings", "list", "--project", "acme", "--json", cwd=project, env=clean_env)
    )
    finding_id = listed["findings"][0]["id"]  # type: ignore[index]
    result = as_json(
        run(aifr_bin, "findings", "triage", finding_id, "false_positive", "--project", "acme",
            "--reason", "staging host", "--as", "erin", "--json", cwd=project, env=clean_env)
    )  # fmt: skip
    assert result["status"] == "ok" and result["audit_id"]
    shown = as_json(
        run(
            aifr_bin,
            "findings",
            "show",
            finding_id,
            "--project",
            "acme",
            "--json",
            cwd=project,
            env=clean_env,
        )
    )
    assert shown["triage_state"] == "false_positive"
    assert [(h["actor"], h["from_state"], h["to_state"]) for h in shown["triage_history"]] == [  # type: ignore[union-attr,index]
        ("erin", "open", "false_positive")
    ]
    fp = as_json(
        run(aifr_bin, "findings", "list", "--project", "acme", "--state", "false_positive", "--json",
            cwd=project, env=clean_env)
    )  # fmt: skip
    assert [f["id"] for f in fp["findings"]] == [finding_id]  # type: ignore[union-attr,index]


def test_a_policy_denial_stops_a_triage_and_changes_nothing(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    (project / "policies" / "00-findings.yaml").write_text(
        "version: 1\nrules:\n  - id: no-triage\n    when: {capability: findings.triage}\n"
        "    decision: DENY\n    reason: triage is frozen\n"
    )
    run(
        aifr_bin,
        "findings",
        "import",
        str(NUCLEI_V3),
        "--project",
        "acme",
        cwd=project,
        env=clean_env,
    )
    listed = as_json(
        run(aifr_bin, "findings", "list", "--project", "acme", "--json", cwd=project, env=clean_env)
    )
    finding_id = listed["findings"][0]["id"]  # type: ignore[index]
    denied = run(
        aifr_bin,
        "findings",
        "triage",
        finding_id,
        "fixed",
        "--project",
        "acme",
        cwd=project,
        env=clean_env,
    )
    assert denied.returncode == 3
    shown = as_json(
        run(
            aifr_bin,
            "findings",
            "show",
            finding_id,
            "--project",
            "acme",
            "--json",
            cwd=project,
            env=clean_env,
        )
    )
    assert shown["triage_state"] == "open" and shown["triage_history"] == []


def test_an_unknown_finding_is_named_with_a_not_found_exit(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    done = run(
        aifr_bin, "findings", "show", "f-none", "--project", "acme", cwd=project, env=clean_env
    )
    assert done.returncode == 5
    assert "findings.not_found" in done.stderr and "f-none" in flat(done.stderr)


def test_registered_resources_link_imported_findings_and_filter_the_list(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    added = as_json(
        run(
            aifr_bin,
            "resources",
            "add",
            "shop.example.test",
            "--project",
            "acme",
            "--json",
            cwd=project,
            env=clean_env,
        )
    )
    assert added["kind"] == "host"
    summary = as_json(
        run(
            aifr_bin,
            "findings",
            "import",
            str(NUCLEI_V3),
            "--project",
            "acme",
            "--json",
            cwd=project,
            env=clean_env,
        )
    )
    assert 0 < summary["linked_to_resources"] <= summary["findings"]  # type: ignore[operator]
    linked = as_json(
        run(aifr_bin, "findings", "list", "--project", "acme", "--resource", str(added["id"]), "--json",
            cwd=project, env=clean_env)
    )  # fmt: skip
    assert len(linked["findings"]) == summary["linked_to_resources"]  # type: ignore[arg-type]
    listed = run(
        aifr_bin, "resources", "list", "--project", "acme", "--json", cwd=project, env=clean_env
    )
    assert [r["value"] for r in json.loads(listed.stdout)] == ["shop.example.test"]
    removed = run(
        aifr_bin,
        "resources",
        "remove",
        str(added["id"]),
        "--project",
        "acme",
        cwd=project,
        env=clean_env,
    )
    assert removed.returncode == 0, removed.stderr
    assert (
        json.loads(
            run(
                aifr_bin,
                "resources",
                "list",
                "--project",
                "acme",
                "--json",
                cwd=project,
                env=clean_env,
            ).stdout
        )
        == []
    )


def test_a_resource_that_is_not_of_its_kind_is_refused(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    done = run(
        aifr_bin, "resources", "add", "10.0.0.0/33", "--project", "acme", cwd=project, env=clean_env
    )
    assert done.returncode == 2
    assert "findings.invalid" in done.stderr and "10.0.0.0/33" in flat(done.stderr)


def test_a_store_from_an_older_aifr_is_refused_until_aifr_findings_migrate(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    run(
        aifr_bin,
        "findings",
        "import",
        str(NUCLEI_V3),
        "--project",
        "acme",
        cwd=project,
        env=clean_env,
    )
    with sqlite3.connect(project / ".aifr" / "aifr.db") as db:
        db.execute("DROP TABLE findings_triage")
        db.execute("DROP TABLE findings_resources")
        db.execute("UPDATE schema_versions SET version = 1 WHERE component = 'findings'")
    refused = run(aifr_bin, "findings", "list", "--project", "acme", cwd=project, env=clean_env)
    assert refused.returncode == 1
    assert "storage.schema_mismatch" in refused.stderr
    assert "aifr findings migrate" in flat(refused.stderr)
    migrated = run(aifr_bin, "findings", "migrate", cwd=project, env=clean_env)
    assert migrated.returncode == 0, migrated.stderr
    assert "version 2" in flat(migrated.stdout)
    listed = as_json(
        run(aifr_bin, "findings", "list", "--project", "acme", "--json", cwd=project, env=clean_env)
    )
    assert listed["findings"]


def test_a_large_import_piped_shows_no_progress_bar(
    aifr_bin: str, project: Path, clean_env: dict[str, str], tmp_path: Path
) -> None:
    line = NUCLEI_V3.read_text().splitlines()[0]
    big = tmp_path / "big.jsonl"
    big.write_text((line + "\n") * (2 * 1024 * 1024 // len(line) + 1))
    done = run(
        aifr_bin, "findings", "import", str(big), "--project", "acme", cwd=project, env=clean_env
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "imported 1 new findings" in flat(done.stdout)


def test_exports_write_sarif_atomically_and_csv_to_stdout_with_filters(
    aifr_bin: str, project: Path, clean_env: dict[str, str], tmp_path: Path
) -> None:
    run(
        aifr_bin,
        "findings",
        "import",
        str(NUCLEI_V3),
        "--project",
        "acme",
        cwd=project,
        env=clean_env,
    )
    listed = as_json(
        run(aifr_bin, "findings", "list", "--project", "acme", "--json", cwd=project, env=clean_env)
    )
    findings = listed["findings"]
    assert isinstance(findings, list)
    target = tmp_path / "out.sarif"
    done = run(aifr_bin, "findings", "export", "--project", "acme", "--format", "sarif", "-o", str(target),
               cwd=project, env=clean_env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    sarif = json.loads(target.read_text())
    assert sarif["version"] == "2.1.0"
    assert len(sarif["runs"][0]["results"]) == len(findings)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.sarif")] == []
    high = [f for f in findings if f["severity"] == "high"]
    csv_out = run(aifr_bin, "findings", "export", "--project", "acme", "--format", "csv", "--severity", "high",
                  cwd=project, env=clean_env)  # fmt: skip
    assert csv_out.returncode == 0, csv_out.stderr
    rows = csv_out.stdout.splitlines()
    assert rows[0].startswith("id,") and len(
        [r for r in rows[1:] if r.split(",")[0] in {f["id"] for f in high}]
    ) == len(high)
    bad = run(
        aifr_bin,
        "findings",
        "export",
        "--project",
        "acme",
        "--format",
        "xml",
        cwd=project,
        env=clean_env,
    )
    assert bad.returncode == 2 and "findings.unknown_format" in bad.stderr


def test_the_undo_a_triage_returns_sets_the_previous_state_back(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    run(
        aifr_bin,
        "findings",
        "import",
        str(NUCLEI_V3),
        "--project",
        "acme",
        cwd=project,
        env=clean_env,
    )
    listed = as_json(
        run(aifr_bin, "findings", "list", "--project", "acme", "--json", cwd=project, env=clean_env)
    )
    finding_id = listed["findings"][0]["id"]  # type: ignore[index]
    done = as_json(
        run(aifr_bin, "call", "findings.triage", "project=acme", f"finding_id={finding_id}", "state=fixed",
            "--as", "erin", "--json", cwd=project, env=clean_env)
    )  # fmt: skip
    undo = done["output"]["undo"]  # type: ignore[index]
    assert undo["state"] == "open"
    pairs = [f"{key}={value}" for key, value in undo.items()]
    undone = run(
        aifr_bin, "call", "findings.triage", *pairs, "--as", "erin", cwd=project, env=clean_env
    )
    assert undone.returncode == 0, undone.stderr
    shown = as_json(
        run(
            aifr_bin,
            "findings",
            "show",
            finding_id,
            "--project",
            "acme",
            "--json",
            cwd=project,
            env=clean_env,
        )
    )
    assert shown["triage_state"] == "open"
    assert [h["to_state"] for h in shown["triage_history"]] == ["fixed", "open"]  # type: ignore[union-attr,index]


def test_a_lone_surrogate_in_scanner_output_is_imported_listed_and_exported(
    aifr_bin: str, project: Path, clean_env: dict[str, str], tmp_path: Path
) -> None:
    odd = tmp_path / "odd.jsonl"
    odd.write_text(
        '{"template-id":"x1","info":{"name":"bad \\ud800 name","severity":"high"},"type":"http",'
        '"host":"a.test","matched-at":"https://a.test/\\udc00","timestamp":"2026-10-02T09:14:03Z",'
        '"matcher-status":true}\n'
    )
    done = run(
        aifr_bin, "findings", "import", str(odd), "--project", "acme", cwd=project, env=clean_env
    )
    assert done.returncode == 0, done.stderr
    for command in (
        ["findings", "list", "--json"],
        ["findings", "export", "--format", "csv"],
        ["findings", "export"],
    ):
        shown = run(aifr_bin, *command, "--project", "acme", cwd=project, env=clean_env)
        assert shown.returncode == 0, shown.stderr
        assert "a.test" in shown.stdout


def test_imports_and_resource_changes_from_the_cli_are_in_the_audit_ledger(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    added = as_json(
        run(
            aifr_bin,
            "resources",
            "add",
            "shop.example.test",
            "--project",
            "acme",
            "--json",
            cwd=project,
            env=clean_env,
        )
    )
    run(
        aifr_bin,
        "findings",
        "import",
        str(NUCLEI_V3),
        "--project",
        "acme",
        cwd=project,
        env=clean_env,
    )
    run(
        aifr_bin,
        "resources",
        "remove",
        str(added["id"]),
        "--project",
        "acme",
        cwd=project,
        env=clean_env,
    )
    tail = run(aifr_bin, "audit", "tail", "--json", cwd=project, env=clean_env)
    records = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [r["kind"] for r in records] == [
        "resources.added",
        "findings.imported",
        "resources.removed",
    ]
    assert records[1]["details"]["project"] == "acme" and records[1]["details"]["imported"] > 0
    verified = run(aifr_bin, "audit", "verify", cwd=project, env=clean_env)
    assert verified.returncode == 0, verified.stderr
