"""Policy regexes that can backtrack exponentially on agent input are refused at load."""

from __future__ import annotations

import pytest

from aifr.capabilities import CapabilitySpec, OperationType
from aifr.errors import ErrorCode, PolicyError
from aifr.policy import Decision, PolicyEngine, PolicyRequest, load_policy_text
from aifr.policy.redos import backtracking_hazard

UNSAFE = [
    r"^(a+)+$",
    r"(\w+\s?)*$",
    r"x(a*)*y",
    r"((ab)*)*",
    r"(a{2,})+",
    r"(?:a|(b+))*",
    r"(?=(a+)+)",
    r"^(?!.*(x+)+)",
    r"(.*a){20}",
    r"^([a-z0-9]+\.)+example\.com$",
]

SAFE = [
    r"^/srv/[a-z]+\.log$",
    r"^https://([a-z]+\.)?example\.com/",
    r"^(\d{1,3}\.){3}\d{1,3}$",
    r"(a|b)*c",
    r"(?>a+)+",
    r"(?:a+)*+",
    r"a++b",
    r"^(?>[a-z0-9]+\.)+example\.com$",
    r"^[^@]+@[^@]+$",
]


@pytest.mark.parametrize("pattern", UNSAFE)
def test_nested_open_ended_repetition_is_a_hazard(pattern: str) -> None:
    hazard = backtracking_hazard(pattern)
    assert hazard is not None
    assert "nested quantifiers" in hazard and "(?>" in hazard


@pytest.mark.parametrize("pattern", SAFE)
def test_single_bounded_possessive_and_atomic_repetitions_are_not(pattern: str) -> None:
    assert backtracking_hazard(pattern) is None


def policy(pattern: str) -> str:
    return (
        "version: 1\nrules:\n  - id: hosts\n    decision: ALLOW\n    when:\n"
        f"      inputs:\n        host: {{regex: '{pattern}'}}\n"
    )


def test_the_loader_refuses_an_unsafe_regex_naming_the_field_and_the_fix() -> None:
    # Structural, so conservative: this one is linear in practice ('.' ends each label),
    # and the message says how to write it so that no reader has to prove that.
    with pytest.raises(PolicyError) as info:
        load_policy_text([("p.yaml", policy(r"^([a-z0-9]+\.)+example\.com$"))])
    error = info.value
    assert error.code is ErrorCode.POLICY_INVALID
    assert error.details["field"] == "rules[0].when.inputs.host.regex"
    assert error.details["line"] == 7
    assert "unsafe regex" in error.message and "possessive" in error.message


def test_the_atomic_rewrite_loads_and_decides_on_hostile_input() -> None:
    # '^(\w+\s?)*$' takes exponential time on this input (each letter may end a word or
    # not); its atomic form gives nothing back and answers at once.
    engine = PolicyEngine(load_policy_text([("p.yaml", policy(r"^(?>\w+\s?)*$"))]))
    cap = CapabilitySpec(id="net.fetch", operation_type=OperationType.READ)

    def decide(host: str) -> Decision:
        return engine.decide(PolicyRequest("alice", cap, {"host": host})).decision

    assert backtracking_hazard(r"^(\w+\s?)*$") is not None
    assert decide("plain words here") is Decision.ALLOW
    assert decide("a" * 5000 + "!") is Decision.DENY
