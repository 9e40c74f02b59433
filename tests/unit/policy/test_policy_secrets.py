"""Secret grants: a ``secret://NAME`` reference is denied unless a ``secrets`` entry covers it."""

from __future__ import annotations

import pytest

from aifr.capabilities import CapabilitySpec, OperationType, Risk, RiskLevel
from aifr.capabilities.secret_syntax import has_secret_refs, secret_names
from aifr.errors import ErrorCode, PolicyError
from aifr.policy import Decision, PolicyEngine, PolicyRequest, load_policy_text
from aifr.policy.explain import explain

POLICY = """\
version: 1
roles:
  deployer: {principals: [ci-bot]}
  releaser: {inherits: [deployer]}
rules:
  - id: allow-all
    when: {capability: "*"}
    decision: ALLOW
secrets:
  - names: GITHUB_TOKEN
    when: {capability: "git.*", roles: [deployer]}
  - names: ["DB_*"]
    when: {capability: db.query, principal: "svc-*"}
"""

PUSH = CapabilitySpec(
    id="git.push", operation_type=OperationType.NETWORK, risk=Risk(level=RiskLevel.LOW)
)
QUERY = CapabilitySpec(
    id="db.query", operation_type=OperationType.READ, risk=Risk(level=RiskLevel.LOW)
)
POST = CapabilitySpec(
    id="http.post", operation_type=OperationType.NETWORK, risk=Risk(level=RiskLevel.LOW)
)


def decide(
    spec: CapabilitySpec,
    inputs: dict[str, object],
    principal: str,
    *,
    roles: frozenset[str] = frozenset(),
    chain: tuple[str, ...] = (),
) -> tuple[Decision, str | None, str]:
    engine = PolicyEngine(load_policy_text([("p.yaml", POLICY)]))
    decision = engine.decide(
        PolicyRequest(
            principal,
            spec,
            inputs,
            roles=roles,
            on_behalf_of=chain,
            secrets=secret_names(inputs),
        )
    )
    return decision.decision, decision.rule_id, decision.reason


def test_names_are_found_anywhere_in_the_inputs() -> None:
    inputs = {"a": "secret://A", "b": [{"c": ("x", "secret://C")}], "d": "not secret://D"}
    assert secret_names(inputs) == {"A", "C"}
    assert has_secret_refs(inputs) and not has_secret_refs({"d": "not secret://D"})


@pytest.mark.parametrize(
    ("spec", "inputs", "principal", "roles", "chain", "allowed"),
    [
        (PUSH, {"token": "secret://GITHUB_TOKEN"}, "ci-bot", (), (), True),
        (PUSH, {"token": "secret://GITHUB_TOKEN"}, "dev", ("releaser",), (), True),  # inherited
        (PUSH, {"token": "secret://GITHUB_TOKEN"}, "dev", (), (), False),  # no role
        (POST, {"body": "secret://GITHUB_TOKEN"}, "ci-bot", (), (), False),  # wrong capability
        (QUERY, {"dsn": "secret://DB_PRIMARY"}, "svc-report", (), (), True),
        (QUERY, {"dsn": "secret://DB_PRIMARY"}, "svc-report", (), ("intern",), False),  # chain
        (QUERY, {"dsn": "secret://DB_PRIMARY"}, "svc-report", (), ("svc-cron",), True),
        (QUERY, {"q": ["secret://DB_PRIMARY", "secret://GITHUB_TOKEN"]}, "svc-a", (), (), False),
        (QUERY, {"dsn": "plain text"}, "anyone", (), (), True),  # no reference, no check
    ],
)
def test_each_secret_needs_a_grant_for_the_capability_the_caller_and_every_link(
    spec: CapabilitySpec,
    inputs: dict[str, object],
    principal: str,
    roles: tuple[str, ...],
    chain: tuple[str, ...],
    allowed: bool,
) -> None:
    decision, rule_id, reason = decide(spec, inputs, principal, roles=frozenset(roles), chain=chain)
    assert (decision is Decision.ALLOW) is allowed, reason
    if not allowed:
        assert rule_id is not None and rule_id.startswith("secret:")
        assert "no policy `secrets` entry covers it" in reason


def test_the_denial_names_the_secret_and_the_principal_without_a_grant() -> None:
    _, rule_id, reason = decide(QUERY, {"dsn": "secret://DB_PRIMARY"}, "svc-a", chain=("eve",))
    assert rule_id == "secret:DB_PRIMARY"
    assert (
        reason
        == "secret://DB_PRIMARY is not granted to 'eve' for db.query: no policy `secrets` entry covers it"
    )


def test_without_any_grant_every_secret_reference_is_denied() -> None:
    engine = PolicyEngine(load_policy_text([("p.yaml", "version: 1\ndefault: ALLOW\n")]))
    inputs = {"token": "secret://ANY"}
    decision = engine.decide(PolicyRequest("root", PUSH, inputs, secrets=secret_names(inputs)))
    assert decision.decision is Decision.DENY and decision.rule_id == "secret:ANY"


@pytest.mark.parametrize(
    ("entry", "field", "problem"),
    [
        ("{names: 'GH_[9-0]'}", "secrets[0].names", "reversed"),
        ("{names: [A, '']}", "secrets[0].names[1]", "cannot be empty"),
        ("{names: A, when: {capability: 'io.[x'}}", "secrets[0].when.capability", "unclosed '['"),
        ("{names: A, when: {roles: [nobody]}, extra: 1}", "secrets[0].extra", "unknown field"),
        ("{when: {capability: x}}", "secrets[0].names", "Field required"),
    ],
)
def test_a_bad_secrets_entry_is_refused_at_its_field(entry: str, field: str, problem: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy_text([("p.yaml", f"version: 1\nsecrets:\n  - {entry}\n")])
    error = info.value
    assert error.code is ErrorCode.POLICY_INVALID
    assert error.details["field"] == field
    assert error.details["line"] == 3
    assert problem in error.message


def test_explain_says_whether_the_secret_references_are_granted() -> None:
    engine = PolicyEngine(load_policy_text([("p.yaml", POLICY)]))

    def notes(inputs: dict[str, object], principal: str) -> tuple[str, ...]:
        request = PolicyRequest(principal, PUSH, inputs, secrets=secret_names(inputs))
        return explain(engine, request).notes

    assert "secret references GITHUB_TOKEN: all granted" in notes(
        {"token": "secret://GITHUB_TOKEN"}, "ci-bot"
    )
    denied = notes({"token": "secret://GITHUB_TOKEN"}, "dev")
    assert any("checked before the rules" in n and "'dev'" in n for n in denied)
    assert not any("secret" in n for n in notes({"token": "plain"}, "dev"))
