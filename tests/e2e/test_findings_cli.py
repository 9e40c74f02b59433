"""``aifr findings`` and ``aifr resources`` as a user runs them, on a project made by ``aifr init``."""

from __future__ import annotations

import json
import os
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
    """A project made by ``aifr init`` whose ``[fs] roots`` also hold the samples and tmp_path.

    ``findings.import`` reads only files inside the roots, as a user who keeps scanner
    output outside the project configures it.
    """
    root = tmp_path / "proj"
    assert run(aifr_bin, "init", str(root), cwd=tmp_path, env=clean_env).returncode == 0
    config = root / "aifr.toml"
    roots = json.dumps([".", str(tmp_path), os.path.abspath(SAMPLES)])
    text = config.read_text()
    assert '\n[fs]\nroots = ["."]\n' in text
    config.write_text(text.replace('\n[fs]\nroots = ["."]\n', f"\n[fs]\nroots = {roots}\n"))
    return root


def allow_resource_removal(project: Path) -> None:
    """``resources.remove`` is a DELETE (HIGH), which the default policy sends to a human."""
    (project / "policies" / "00-resources.yaml").write_text(
        "version: 1\nrules:\n  - id: operator-removes-resources\n"
        "    when: {capability: resources.remove}\n    decision: ALLOW\n"
        "    reason: the operator curates the targets\n"
    )


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
    allow_resource_removal(project)
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


def test_imports_and_resource_changes_from_the_cli_are_governed_calls_in_the_audit_ledger(
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
    imported = run(
        aifr_bin,
        "findings",
        "import",
        str(NUCLEI_V3),
        "--project",
        "acme",
        cwd=project,
        env=clean_env,
    )
    assert imported.returncode == 0, imported.stderr
    listed = run(aifr_bin, "resources", "list", "--project", "acme", cwd=project, env=clean_env)
    assert listed.returncode == 0, listed.stderr
    allow_resource_removal(project)
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
    tail = run(aifr_bin, "audit", "tail", "--json", cwd=project, env=clean_env)
    records = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [(r["kind"], r["capability_id"], r["outcome"]) for r in records] == [
        ("invocation", "resources.add", "ok"),
        ("invocation", "findings.import", "ok"),
        ("invocation", "resources.list", "ok"),
        ("invocation", "resources.remove", "ok"),
    ]
    assert records[0]["details"]["findings"]["value"] == "shop.example.test"
    counts = records[1]["details"]["findings"]
    assert (
        counts["project"] == "acme"
        and counts["imported"] == 8
        and counts["linked_to_resources"] > 0
    )
    assert counts["file"] == os.path.abspath(NUCLEI_V3)
    assert records[3]["rule_id"] == "operator-removes-resources"
    assert records[3]["details"]["findings"]["resource_id"] == added["id"]
    verified = run(aifr_bin, "audit", "verify", cwd=project, env=clean_env)
    assert verified.returncode == 0, verified.stderr


@pytest.mark.parametrize(
    ("capability", "command"),
    [
        ("findings.import", ["findings", "import", str(NUCLEI_V3)]),
        ("resources.add", ["resources", "add", "shop.example.test"]),
        ("resources.list", ["resources", "list"]),
        ("resources.remove", ["resources", "remove", "res-000000000000"]),
    ],
)
def test_a_policy_denial_stops_each_findings_command_naming_the_rule(
    aifr_bin: str, project: Path, clean_env: dict[str, str], capability: str, command: list[str]
) -> None:
    (project / "policies" / "00-frozen.yaml").write_text(
        f"version: 1\nrules:\n  - id: frozen-{capability}\n    when: {{capability: {capability}}}\n"
        "    decision: DENY\n    reason: the registry is frozen\n"
    )
    denied = run(aifr_bin, *command, "--project", "acme", cwd=project, env=clean_env)
    assert denied.returncode == 3, denied.stdout + denied.stderr
    assert f"rule: frozen-{capability}" in flat(denied.stdout)
    tail = run(aifr_bin, "audit", "tail", "--json", cwd=project, env=clean_env)
    [record] = [json.loads(line) for line in tail.stdout.splitlines()]
    assert record["capability_id"] == capability and record["decision"] == "DENY"
    assert record["rule_id"] == f"frozen-{capability}"
    if capability != "resources.list":  # nothing was written: the project does not exist
        listed = run(aifr_bin, "findings", "list", "--project", "acme", "--json", cwd=project,
                     env=clean_env)  # fmt: skip
        assert as_json(listed)["findings"] == []


def test_removing_a_resource_needs_an_approval_under_the_default_policy(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    added = as_json(
        run(aifr_bin, "resources", "add", "a.test", "--project", "acme", "--json", cwd=project,
            env=clean_env)
    )  # fmt: skip
    pending = run(
        aifr_bin, "resources", "remove", str(added["id"]), "--project", "acme", cwd=project,
        env=clean_env,
    )  # fmt: skip
    assert pending.returncode == 4, pending.stdout + pending.stderr
    assert "rule: approve-high-risk" in flat(pending.stdout)
    listed = run(aifr_bin, "resources", "list", "--project", "acme", "--json", cwd=project,
                 env=clean_env)  # fmt: skip
    assert [r["id"] for r in json.loads(listed.stdout)] == [added["id"]]


def test_a_file_outside_the_roots_is_refused_and_nothing_is_imported(
    aifr_bin: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    root = tmp_path / "plain"
    assert run(aifr_bin, "init", str(root), cwd=tmp_path, env=clean_env).returncode == 0
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(NUCLEI_V3.read_bytes())
    refused = run(
        aifr_bin, "findings", "import", str(outside), "--project", "acme", cwd=root, env=clean_env
    )
    assert refused.returncode != 0
    assert "path_outside_root" in flat(refused.stderr) and "[fs] roots" in flat(refused.stderr)
    inside = root / "scan.jsonl"
    inside.write_bytes(NUCLEI_V3.read_bytes())
    imported = run(
        aifr_bin, "findings", "import", "scan.jsonl", "--project", "acme", "--json", cwd=root,
        env=clean_env,
    )  # fmt: skip
    assert as_json(imported)["imported"] == 8
    link = root / "link.jsonl"
    link.symlink_to(outside)
    refused_link = run(
        aifr_bin, "findings", "import", "link.jsonl", "--project", "acme", cwd=root, env=clean_env
    )
    assert refused_link.returncode != 0 and "symlink_refused" in flat(refused_link.stderr)
