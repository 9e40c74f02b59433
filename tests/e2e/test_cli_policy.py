"""``aifr policy check|explain|test`` and ``aifr grants`` as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

TABLE_DIR = Path(__file__).parents[1] / "unit" / "policy" / "table"

ROLES = """\
version: 1
roles:
  approver: {principals: [erin]}
  admin: {principals: [root], inherits: [approver]}
approvals:
  - {risk: HIGH, roles: [approver, admin]}
"""


def run(
    aifr_bin: str, *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [aifr_bin, *args],
        cwd=cwd,
        env={**env, "COLUMNS": "40"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def project(tmp_path: Path, aifr_bin: str, env: dict[str, str]) -> Path:
    root = tmp_path / "proj"
    assert run(aifr_bin, "init", str(root), cwd=tmp_path, env=env).returncode == 0
    return root


def test_the_policy_table_passes_through_the_cli(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    result = run(
        aifr_bin, "policy", "test", str(TABLE_DIR / "cases.yaml"), cwd=tmp_path, env=clean_env
    )
    assert result.returncode == 0, result.stderr
    assert "0 failed" in result.stdout


def test_a_wrong_expectation_fails_with_a_readable_diff(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    shutil.copytree(TABLE_DIR / "policies", tmp_path / "policies")
    (tmp_path / "cases.yaml").write_text(
        "policy: policies\n"
        "capabilities:\n  - {id: io.fs.read_file, operation: READ, risk: LOW}\n"
        "cases:\n"
        "  - {name: reads are denied, principal: alice, capability: io.fs.read_file, expect: DENY}\n"
        "  - {name: reads are allowed, principal: alice, capability: io.fs.read_file, expect: ALLOW}\n"
    )
    result = run(aifr_bin, "policy", "test", "cases.yaml", cwd=tmp_path, env=clean_env)
    assert result.returncode == 1
    assert "cases.yaml:5:5: reads are denied" in result.stderr
    assert "- expected: DENY" in result.stderr
    assert "+ actual:   ALLOW rule=allow-reads" in result.stderr
    assert "1 passed, 1 failed" in result.stdout


def test_check_passes_the_template_and_fails_a_broken_file_naming_its_line(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    root = project(tmp_path, aifr_bin, clean_env)
    ok = run(aifr_bin, "policy", "check", "--json", cwd=root, env=clean_env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == []
    (root / "policies" / "zz.yaml").write_text(
        "version: 1\nrules:\n  - id: x\n    decision: PERHAPS\n"
    )
    bad = run(aifr_bin, "policy", "check", cwd=root, env=clean_env)
    assert bad.returncode == 1
    assert "zz.yaml:4:5: error [schema]" in bad.stdout
    assert "rules[0].decision" in bad.stdout


def test_explain_names_the_matching_rule_and_why_earlier_rules_missed(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    root = project(tmp_path, aifr_bin, clean_env)
    result = run(
        aifr_bin,
        "policy",
        "explain",
        "--principal",
        "alice",
        "--capability",
        "db.drop",
        "--operation",
        "DELETE",
        "--risk",
        "CRITICAL",
        "--input",
        "table=users",
        "--json",
        cwd=root,
        env=clean_env,
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["decision"] == "REQUIRE_APPROVAL"
    assert body["quorum"] == 2
    rules = body["principals"][0]["rules"]
    assert rules[0] == {
        "rule_id": "allow-reads",
        "decision": "ALLOW",
        "matched": False,
        "why_not": "operation DELETE is not READ",
        "source": f"{root / 'policies' / 'default.yaml'}:10:5",
    }
    assert rules[1]["matched"] is True


def test_grants_are_issued_listed_and_revoked_from_the_cli(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    root = project(tmp_path, aifr_bin, clean_env)
    (root / "policies" / "default.yaml").write_text(ROLES)
    issued = run(
        aifr_bin,
        "grants",
        "issue",
        "--as",
        "erin",
        "--principal",
        "alice",
        "--capability",
        "io.fs.*",
        "--input",
        "path=/srv/a",
        "--ttl-s",
        "600",
        cwd=root,
        env=clean_env,
    )
    assert issued.returncode == 0, issued.stderr
    listed = json.loads(run(aifr_bin, "grants", "list", "--json", cwd=root, env=clean_env).stdout)
    assert [(g["principal"], g["capability"], g["constraints"]) for g in listed] == [
        ("alice", "io.fs.*", {"path": "/srv/a"})
    ]
    revoked = run(
        aifr_bin, "grants", "revoke", listed[0]["id"], "--as", "root", cwd=root, env=clean_env
    )
    assert revoked.returncode == 0, revoked.stderr
    assert (
        json.loads(run(aifr_bin, "grants", "list", "--json", cwd=root, env=clean_env).stdout) == []
    )
    self_grant = run(
        aifr_bin,
        "grants",
        "issue",
        "--as",
        "erin",
        "--principal",
        "erin",
        "--capability",
        "*",
        cwd=root,
        env=clean_env,
    )
    assert self_grant.returncode != 0
    assert "approval.self_approval" in self_grant.stderr
    missing = run(aifr_bin, "grants", "revoke", "g-nope", "--as", "root", cwd=root, env=clean_env)
    assert missing.returncode == 5
    assert "policy.grant_not_found" in missing.stderr
    exported = run(aifr_bin, "audit", "export", "--format", "jsonl", cwd=root, env=clean_env)
    changes = [
        (r["principal"], r["details"]["key"], r["details"]["action"], r["details"]["id"])
        for r in map(json.loads, exported.stdout.splitlines())
        if r["kind"] == "config.changed"
    ]
    assert changes == [
        ("erin", "policy.grants", "issued", listed[0]["id"]),
        ("root", "policy.grants", "revoked", listed[0]["id"]),
    ]
    assert run(aifr_bin, "audit", "verify", cwd=root, env=clean_env).returncode == 0


def test_a_path_with_a_doubled_leading_slash_is_still_under_a_denied_root(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    root = project(tmp_path, aifr_bin, clean_env)
    (root / "policies" / "05-deny.yaml").write_text(
        "version: 1\n"
        "rules:\n"
        "  - {id: deny-etc, when: {inputs: {path: {under: /etc}}}, decision: DENY}\n"
    )
    for path in ("/etc/hostname", "//etc/hostname"):
        result = run(
            aifr_bin, "call", "io.fs.read_file", f"path={path}", "--json", cwd=root, env=clean_env
        )
        body = json.loads(result.stdout)
        assert body["decision"]["rule_id"] == "deny-etc", path
        assert body["error"]["code"] == "policy.denied"


def test_a_grant_does_not_stand_in_for_approvers_its_issuer_is_not(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    root = project(tmp_path, aifr_bin, clean_env)
    (root / "policies" / "default.yaml").write_text(
        ROLES + "rules:\n"
        "  - {id: exec-two-admins, when: {capability: sys.exec}, decision: REQUIRE_APPROVAL,\n"
        "     approvers: [admin], quorum: 2}\n"
        "  - {id: fs-any-approver, when: {capability: io.fs.delete}, decision: REQUIRE_APPROVAL}\n"
    )
    issued = run(
        aifr_bin, "grants", "issue", "--as", "erin", "--principal", "alice", "--capability", "*",
        cwd=root, env=clean_env,
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr

    def decision(capability: str) -> dict[str, object]:
        result = run(
            aifr_bin, "policy", "explain", "--principal", "alice", "--capability", capability,
            "--json", cwd=root, env=clean_env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        body: dict[str, object] = json.loads(result.stdout)
        return body

    assert decision("sys.exec")["decision"] == "REQUIRE_APPROVAL"
    assert decision("io.fs.delete")["decision"] == "ALLOW"


def test_rules_judge_inputs_as_validated_so_a_number_sent_as_a_string_is_still_denied(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    root = project(tmp_path, aifr_bin, clean_env)
    (root / "till_caps.py").write_text(
        "from aifr import capability\n\n\n"
        '@capability("till.pay", operation="WRITE", risk="MEDIUM")\n'
        "def pay(amount: float, urgent: bool = False) -> dict[str, float]:\n"
        '    """Pay out."""\n'
        '    return {"paid": amount}\n'
    )
    config = root / "aifr.toml"
    config.write_text(
        config.read_text().replace("capability_modules = []", 'capability_modules = ["till_caps"]')
    )
    (root / "policies" / "05-till.yaml").write_text(
        "version: 1\n"
        "rules:\n"
        "  - {id: big, when: {capability: till.pay, inputs: {amount: {gt: 1000}}}, decision: DENY}\n"
        "  - {id: urgent, when: {capability: till.pay, inputs: {urgent: true}}, decision: DENY}\n"
    )
    for inputs, rule in (
        ({"amount": "5000"}, "big"),
        ({"amount": 5, "urgent": "true"}, "urgent"),
        ({"amount": 5, "urgent": 1}, "urgent"),
    ):
        (root / "in.json").write_text(json.dumps(inputs))
        result = run(
            aifr_bin,
            "call",
            "till.pay",
            "--input-file",
            "in.json",
            "--json",
            cwd=root,
            env=clean_env,
        )
        body = json.loads(result.stdout)
        assert body["decision"]["rule_id"] == rule, inputs
        assert body["error"]["code"] == "policy.denied"
    (root / "in.json").write_text(json.dumps({"amount": "12"}))
    allowed = run(
        aifr_bin, "call", "till.pay", "--input-file", "in.json", "--json", cwd=root, env=clean_env
    )
    assert json.loads(allowed.stdout)["output"] == {"paid": 12.0}


def test_explain_refuses_to_redescribe_a_registered_capability(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    root = project(tmp_path, aifr_bin, clean_env)
    for extra in (["--operation", "DELETE", "--risk", "CRITICAL"], ["--risk", "CRITICAL"]):
        result = run(
            aifr_bin, "policy", "explain", "--principal", "alice",
            "--capability", "io.fs.read_file", *extra, cwd=root, env=clean_env,
        )  # fmt: skip
        assert result.returncode == 2, result.stdout
        assert "capability.invalid" in result.stderr
        assert "is registered (READ, LOW risk)" in " ".join(result.stderr.split())


def _check_rules(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str], *rules: str
) -> subprocess.CompletedProcess[str]:
    """``aifr policy check`` of a project whose ``zz.yaml`` holds ``rules`` (flow style, lines 3+)."""
    root = project(tmp_path, aifr_bin, clean_env)
    body = "".join(f"  - {rule}\n" for rule in rules)
    (root / "policies" / "zz.yaml").write_text(f"version: 1\nrules:\n{body}")
    return run(aifr_bin, "policy", "check", cwd=root, env=clean_env)


def test_a_nan_operand_is_refused_at_load_since_no_input_could_ever_match_it(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    result = _check_rules(
        tmp_path, aifr_bin, clean_env,
        "{id: big, when: {inputs: {amount: {gt: .nan}}}, decision: DENY}",
        "{id: odd, when: {inputs: {amount: [1, .NaN]}}, decision: DENY}",
    )  # fmt: skip
    assert result.returncode == 1
    assert "zz.yaml:3:" in result.stdout
    assert "rules[0].when.inputs.amount.gt: NaN is not a value" in result.stdout
    assert "rules[1].when.inputs.amount.in: NaN is not a value" in result.stdout


def test_an_empty_list_in_a_rule_is_refused_at_load_since_it_would_never_match(
    tmp_path: Path, aifr_bin: str, clean_env: dict[str, str]
) -> None:
    result = _check_rules(
        tmp_path, aifr_bin, clean_env,
        "{id: a, when: {capability: []}, decision: DENY}",
        "{id: b, when: {roles: []}, decision: DENY}",
        "{id: c, when: {inputs: {path: []}}, decision: DENY}",
        "{id: d, when: {inputs: {path: {in: []}}}, decision: DENY}",
    )  # fmt: skip
    assert result.returncode == 1
    refused = "an empty list matches nothing"
    for line, field in [
        (3, "rules[0].when.capability"),
        (4, "rules[1].when.roles"),
        (5, "rules[2].when.inputs.path"),
        (6, "rules[3].when.inputs.path.in"),
    ]:
        assert any(
            f"zz.yaml:{line}:" in out and f"{field}: " in out and refused in out
            for out in result.stdout.splitlines()
        ), (field, result.stdout)
