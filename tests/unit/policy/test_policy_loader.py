"""Loading policy files: the template policy, located errors, ordering, the JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from aifr.capabilities import CapabilitySpec, OperationType, Risk, RiskLevel
from aifr.config import DEFAULT_POLICY
from aifr.errors import ErrorCode, PolicyError
from aifr.policy import Decision, PolicyEngine, PolicyRequest, load_policy, load_policy_text
from aifr.policy.document import policy_json_schema

SCHEMA_FILE = Path(__file__).parents[3] / "src" / "aifr" / "policy" / "policy.schema.json"


def spec(cap_id: str, op: OperationType, level: RiskLevel | None) -> CapabilitySpec:
    return CapabilitySpec(
        id=cap_id, operation_type=op, risk=Risk(level=level) if level is not None else None
    )


def decide(policy_text: str, cap: CapabilitySpec, principal: str = "alice") -> Decision:
    engine = PolicyEngine(load_policy_text([("p.yaml", policy_text)]))
    return engine.decide(PolicyRequest(principal, cap, {})).decision


def load_error(text: str, name: str = "p.yaml") -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_policy_text([(name, text)])
    assert info.value.code is ErrorCode.POLICY_INVALID
    return info.value


def test_template_policy_allows_reads_and_asks_approvers_for_high_risk() -> None:
    engine = PolicyEngine(load_policy_text([("default.yaml", DEFAULT_POLICY)]))
    read = engine.decide(PolicyRequest("u", spec("a.read", OperationType.READ, RiskLevel.LOW), {}))
    high = engine.decide(
        PolicyRequest("u", spec("a.run", OperationType.EXECUTE, RiskLevel.HIGH), {})
    )
    critical = engine.decide(
        PolicyRequest("u", spec("a.drop", OperationType.DELETE, RiskLevel.CRITICAL), {})
    )
    assert (read.decision, read.rule_id) == (Decision.ALLOW, "allow-reads")
    assert high.decision is Decision.REQUIRE_APPROVAL
    assert set(high.approver_roles) == {"approver", "admin"}
    assert critical.decision is Decision.REQUIRE_APPROVAL
    assert critical.approver_roles == ("admin",)
    assert critical.quorum == 2


def test_template_policy_is_valid_under_the_published_json_schema() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = list(
        jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load(DEFAULT_POLICY))
    )
    assert errors == []


def test_schema_file_is_generated_from_the_document_models() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == policy_json_schema()


def test_without_rules_high_risk_is_denied_and_low_risk_allowed() -> None:
    text = "version: 1\n"
    assert decide(text, spec("x.w", OperationType.WRITE, RiskLevel.MEDIUM)) is Decision.ALLOW
    assert decide(text, spec("x.r", OperationType.EXECUTE, RiskLevel.HIGH)) is Decision.DENY
    assert decide(text, spec("x.u", OperationType.EXECUTE, None)) is Decision.DENY


def test_a_single_default_applies_to_every_risk_level() -> None:
    text = "version: 1\ndefault: REQUIRE_APPROVAL\n"
    low = spec("x.r", OperationType.READ, RiskLevel.LOW)
    assert decide(text, low) is Decision.REQUIRE_APPROVAL


def test_a_missing_policy_folder_means_built_in_defaults(tmp_path: Path) -> None:
    policy = load_policy(tmp_path / "absent")
    assert policy.rules == ()
    assert policy.defaults[RiskLevel.HIGH] is Decision.DENY


def test_malformed_yaml_names_file_and_line() -> None:
    error = load_error("version: 1\nrules:\n  - id: a\n   decision: ALLOW\n")
    assert error.details["file"] == "p.yaml"
    assert error.details["line"] == 4
    assert "invalid YAML" in error.message


def test_unknown_field_names_file_line_and_field_path() -> None:
    text = "version: 1\nrules:\n  - id: a\n    decision: ALLOW\n    when:\n      principle: bob\n"
    error = load_error(text)
    assert error.message.startswith("p.yaml:6:7: rules[0].when.principle: unknown field")
    assert error.details["field"] == "rules[0].when.principle"


@pytest.mark.parametrize(
    ("when", "field", "meant"),
    [
        ("{capabilty: 'io.*'}", "when.capabilty", "capability"),
        ("{inputs: {path: {undr: /srv}}}", "when.inputs.path.undr", "under"),
        ("{inputs: {n: {inn: [1, 2]}}}", "when.inputs.n.inn", "in"),
    ],
)
def test_a_misspelt_field_names_the_field_allowed_there(when: str, field: str, meant: str) -> None:
    error = load_error(f"version: 1\nrules:\n  - id: a\n    decision: ALLOW\n    when: {when}\n")
    assert f"rules[0].{field}: unknown field (did you mean {meant!r}?)" in error.message


def test_an_unknown_field_with_nothing_close_gets_no_guess() -> None:
    error = load_error("version: 1\nrules:\n  - id: a\n    decision: ALLOW\n    xyzzy: 1\n")
    assert error.message.endswith("rules[0].xyzzy: unknown field")


def test_unknown_decision_value_names_the_field_and_value() -> None:
    error = load_error("version: 1\nrules:\n  - id: a\n    decision: ALOW\n")
    assert error.details["line"] == 4
    assert error.details["field"] == "rules[0].decision"
    assert "'ALOW'" in error.message


def test_unknown_input_operator_is_reported_at_its_key() -> None:
    text = (
        "version: 1\nrules:\n  - id: a\n    decision: DENY\n    when:\n"
        "      inputs:\n        path: {starts: /x}\n"
    )
    error = load_error(text)
    assert error.details["field"] == "rules[0].when.inputs.path.starts"
    assert error.details["line"] == 7


def test_invalid_regex_is_reported_with_its_field() -> None:
    text = (
        "version: 1\nrules:\n  - id: a\n    decision: DENY\n    when:\n"
        "      inputs:\n        url: {regex: '(unclosed'}\n"
    )
    error = load_error(text)
    assert error.details["field"] == "rules[0].when.inputs.url.regex"
    assert "invalid regex" in error.message


@pytest.mark.parametrize(
    ("when", "field", "problem"),
    [
        ("{capability: 'io.[fs*'}", "rules[0].when.capability", "unclosed '['"),
        ("{capability: [io.fs.read, 'db.[z-a]*']}", "rules[0].when.capability[1]", "reversed"),
        ("{principal: ''}", "rules[0].when.principal", "cannot be empty"),
        ("{workflow: 'release-[9-0]'}", "rules[0].when.workflow", "reversed"),
        ("{on_behalf_of: ['[!]']}", "rules[0].when.on_behalf_of[0]", "unclosed '['"),
        ("{inputs: {path: {glob: '*.[tx'}}}", "rules[0].when.inputs.path.glob", "unclosed '['"),
        ("{inputs: {path: {under: ''}}}", "rules[0].when.inputs.path.under", "cannot be empty"),
    ],
)
def test_invalid_globs_in_a_when_are_rejected_at_their_field(
    when: str, field: str, problem: str
) -> None:
    error = load_error(f"version: 1\nrules:\n  - id: a\n    decision: DENY\n    when: {when}\n")
    assert error.details["field"] == field
    assert error.details["line"] == 5
    assert problem in error.message


def test_invalid_globs_in_role_and_group_bindings_are_rejected() -> None:
    text = (
        "version: 1\ngroups:\n  ops: [carol, 'oncall-[5-1]']\n"
        "roles:\n  admin: {principals: ['root', 'adm[in'], groups: [ops]}\n"
        "rate_limits:\n  - {name: n, when: {capability: ''}, limit: 1, per_s: 1}\n"
    )
    error = load_error(text)
    problems = error.details["errors"]
    assert isinstance(problems, list)
    fields = [item["field"] for item in problems if isinstance(item, dict)]
    assert fields == [
        "groups.ops[1]",
        "roles.admin.principals[1]",
        "rate_limits[0].when.capability",
    ]


def test_literal_brackets_and_ordinary_classes_still_load() -> None:
    text = (
        "version: 1\nrules:\n  - id: a\n    decision: DENY\n"
        "    when: {capability: ['db.?rop', '[id]*', 'x.[!a-c]', 'x.[]-a]'], principal: 'u[[]1]'}\n"
    )
    assert len(load_policy_text([("p.yaml", text)]).rules) == 1


def test_cyclic_role_inheritance_is_rejected() -> None:
    text = "version: 1\nroles:\n  a: {inherits: [b]}\n  b: {inherits: [c]}\n  c: {inherits: [a]}\n"
    error = load_error(text)
    assert "cyclic role inheritance: a -> b -> c -> a" in error.message
    assert error.details["field"] == "roles.a"


def test_inheriting_an_unknown_role_is_rejected() -> None:
    error = load_error("version: 1\nroles:\n  a: {inherits: [ghost]}\n")
    assert "unknown role 'ghost'" in error.message


def test_duplicate_yaml_keys_are_rejected() -> None:
    error = load_error("version: 1\nversion: 1\n")
    assert "duplicate key 'version'" in error.message
    assert error.details["line"] == 2


def test_duplicate_rule_ids_across_files_name_both_places() -> None:
    rule = "version: 1\nrules:\n  - id: same\n    decision: ALLOW\n"
    with pytest.raises(PolicyError) as info:
        load_policy_text([("a.yaml", rule), ("b.yaml", rule)])
    assert info.value.details["file"] == "b.yaml"
    assert "already used at a.yaml:3:5" in info.value.message


def test_approval_fields_on_an_allow_rule_are_rejected() -> None:
    error = load_error("version: 1\nrules:\n  - id: a\n    decision: ALLOW\n    quorum: 2\n")
    assert "only apply to REQUIRE_APPROVAL" in error.message


def test_contradictory_risk_bounds_are_rejected() -> None:
    text = (
        "version: 1\nrules:\n  - id: a\n    decision: DENY\n"
        "    when: {risk_at_least: HIGH, risk_at_most: LOW}\n"
    )
    assert "no risk level" in load_error(text).message


def test_files_load_in_name_order_and_the_first_match_wins(tmp_path: Path) -> None:
    (tmp_path / "20-allow.yaml").write_text(
        "version: 1\nrules:\n  - id: allow-all\n    decision: ALLOW\n"
    )
    (tmp_path / "10-deny.yaml").write_text(
        "version: 1\nrules:\n  - id: deny-all\n    decision: DENY\n"
    )
    (tmp_path / "notes.txt").write_text("not a policy")
    policy = load_policy(tmp_path)
    assert [r.id for r in policy.rules] == ["deny-all", "allow-all"]
    assert policy.files == (str(tmp_path / "10-deny.yaml"), str(tmp_path / "20-allow.yaml"))


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    text = "version: 1\nrules:\n  - id: a\n    decision: NOPE\n  - id: b\n    decision: NEVER\n"
    error = load_error(text)
    assert len(error.details["errors"]) == 2  # type: ignore[arg-type]  # a JSON list


def test_yaml_aliases_load_and_a_self_referencing_alias_is_an_error_not_a_crash() -> None:
    text = (
        "version: 1\nrules:\n  - id: a\n    when: &w {operation: READ}\n    decision: ALLOW\n"
        "  - id: b\n    when: *w\n    decision: DENY\n"
    )
    assert [r.id for r in load_policy_text([("p.yaml", text)]).rules] == ["a", "b"]
    error = load_error("version: 1\nrules: &r [*r]\n")
    assert str(error.details["field"]).startswith("rules")
