"""Properties of first-match evaluation and of the compiled index (hypothesis)."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aifr.capabilities import CapabilitySpec, OperationType, Risk, RiskLevel
from aifr.policy import (
    ApprovalRule,
    ApprovalTable,
    CompiledPolicy,
    Decision,
    GlobSet,
    InputCondition,
    Match,
    Policy,
    PolicyDecision,
    PolicyEngine,
    PolicyRequest,
    Rbac,
    Rule,
    first_match,
)
from aifr.policy.approvers import RoleDef
from aifr.policy.index import default_decision, rule_decision, view_of

CAPABILITY_IDS = ["io.fs.read", "io.fs.write", "io.net.get", "db.drop", "db.query", "sys.exec"]
PRINCIPALS = ["alice", "bob", "agent-1", "agent-2"]
ROLES = ["admin", "dev", "ops"]
GLOBS = [
    "io.*",
    "io.fs.*",
    "io.fs.read",
    "io.fs.read*",
    "db.drop*x",
    "*.get",
    "db.?rop",
    "db.*",
    "sys.exec",
    "*",
    "[id]*",
]
CONDITIONS = [
    InputCondition("path", {"under": "/srv"}),
    InputCondition("n", {"gt": 3}),
    InputCondition("n", {"le": 3}),
    InputCondition("mode", {"in": ["x", "y"]}),
    InputCondition("mode", {"regex": re.compile("^x")}),
    InputCondition("path", {"glob": "*.txt"}),
    InputCondition("flag", {"exists": False}),
]

specs = st.builds(
    lambda cap_id, op, level, tags: CapabilitySpec(
        id=cap_id,
        operation_type=op,
        risk=Risk(level=level),
        tags=tuple(tags),
    ),
    st.sampled_from(CAPABILITY_IDS),
    st.sampled_from([OperationType.READ, OperationType.WRITE, OperationType.EXECUTE]),
    st.sampled_from([RiskLevel.HIGH, RiskLevel.CRITICAL]),
    st.lists(st.sampled_from(["pii", "net"]), max_size=2),
)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


matches = st.builds(
    Match,
    capabilities=optional(st.lists(st.sampled_from(GLOBS), min_size=1, max_size=2).map(GlobSet)),
    operations=optional(st.frozensets(st.sampled_from(list(OperationType)), min_size=1)),
    risks=optional(st.frozensets(st.sampled_from(list(RiskLevel)), min_size=1)),
    tags=optional(st.frozensets(st.sampled_from(["pii", "net"]))),
    principals=optional(
        st.lists(st.sampled_from(["alice", "agent-*", "b*"]), min_size=1).map(GlobSet)
    ),
    roles=optional(st.frozensets(st.sampled_from(ROLES), min_size=1)),
    workflows=optional(st.sampled_from([["release-*"], ["nightly"]]).map(GlobSet)),
    inputs=st.lists(st.sampled_from(CONDITIONS), max_size=2).map(tuple),
)


@st.composite
def rule_lists(draw: st.DrawFn) -> list[Rule]:
    whens = draw(st.lists(matches, max_size=25))
    decisions = draw(
        st.lists(st.sampled_from(list(Decision)), min_size=len(whens), max_size=len(whens))
    )
    return [
        Rule(id=f"r{i}", index=i, when=when, decision=decision, reason=f"rule {i}")
        for i, (when, decision) in enumerate(zip(whens, decisions, strict=True))
    ]


requests = st.builds(
    PolicyRequest,
    principal=st.sampled_from(PRINCIPALS),
    capability=specs,
    inputs=st.fixed_dictionaries(
        {},
        optional={
            "path": st.sampled_from(["/srv/a.txt", "/srv/../etc/x", "/tmp/b", 7]),
            "n": st.sampled_from([0, 3, 4, 2.5, "9", True]),
            "mode": st.sampled_from(["x", "y", "xz", "z"]),
            "flag": st.booleans(),
        },
    ),
    roles=st.frozensets(st.sampled_from(ROLES), max_size=2),
    workflow_id=optional(st.sampled_from(["release-1", "nightly", "other"])),
)


def naive(policy: Policy, request: PolicyRequest) -> PolicyDecision:
    view = view_of(
        request.capability,
        request.principal,
        request.roles,
        request.inputs,
        request.workflow_id,
        request.on_behalf_of,
    )
    rule = first_match(policy.rules, view)
    if rule is None:
        return default_decision(policy, request.capability)
    return rule_decision(policy, rule, request.capability)


@settings(max_examples=300, deadline=None)
@given(rules=rule_lists(), batch=st.lists(requests, min_size=1, max_size=8))
def test_compiled_index_agrees_with_a_naive_first_match_loop(
    rules: list[Rule], batch: list[PolicyRequest]
) -> None:
    policy = Policy(rules=tuple(rules))
    engine = PolicyEngine(policy)
    for request in batch * 2:  # the second pass is served from the memoized plans
        assert engine.decide(request) == naive(policy, request)


@settings(max_examples=300, deadline=None)
@given(
    rules=rule_lists(), extra=matches, decision=st.sampled_from(list(Decision)), request=requests
)
def test_adding_a_rule_after_the_matching_rule_never_changes_the_decision(
    rules: list[Rule], extra: Match, decision: Decision, request: PolicyRequest
) -> None:
    before = PolicyEngine(Policy(rules=tuple(rules))).decide(request)
    if before.rule_id is None:
        return  # no rule matched: a new rule may legitimately decide
    appended = Rule(id="late", index=len(rules), when=extra, decision=decision, reason="late")
    after = PolicyEngine(Policy(rules=(*rules, appended))).decide(request)
    assert after == before


@settings(max_examples=200, deadline=None)
@given(
    rules=rule_lists(),
    request=requests,
    chain=st.lists(st.sampled_from(PRINCIPALS), min_size=1, max_size=3).map(tuple),
)
def test_a_delegated_request_is_never_freer_than_any_link_alone(
    rules: list[Rule], request: PolicyRequest, chain: tuple[str, ...]
) -> None:
    engine = PolicyEngine(Policy(rules=tuple(rules)))
    delegated = PolicyRequest(
        principal=request.principal,
        capability=request.capability,
        inputs=request.inputs,
        roles=request.roles,
        workflow_id=request.workflow_id,
        on_behalf_of=chain,
    )
    combined = engine.decide(delegated).decision.severity
    for position, link in enumerate((request.principal, *chain)):
        alone = PolicyRequest(
            principal=link,
            capability=request.capability,
            inputs=request.inputs,
            roles=request.roles if position == 0 else frozenset(),
            workflow_id=request.workflow_id,
            on_behalf_of=chain,
        )
        assert combined >= engine.decide(alone).decision.severity


any_specs = st.builds(
    lambda cap_id, op, risk: CapabilitySpec(id=cap_id, operation_type=op, risk=risk),
    st.sampled_from(CAPABILITY_IDS),
    st.sampled_from([OperationType.READ, OperationType.WRITE, OperationType.EXECUTE]),
    optional(
        st.builds(Risk, level=st.sampled_from(list(RiskLevel)), requires_approval=st.booleans())
    ),
)

approval_tables = st.lists(
    st.builds(
        ApprovalRule,
        risk=st.sampled_from(list(RiskLevel)),
        roles=st.lists(st.sampled_from(ROLES), min_size=1, max_size=2, unique=True).map(tuple),
        quorum=st.integers(1, 2),
    ),
    max_size=2,
).map(ApprovalTable)

rbacs = st.builds(
    lambda bindings, groups: Rbac(
        {
            role: RoleDef(role, GlobSet(patterns), frozenset(member_of))
            for role, (patterns, member_of) in bindings.items()
        },
        {name: GlobSet(members) for name, members in groups.items()},
        {
            "admin": frozenset({"admin", "ops"}),
            "dev": frozenset({"dev"}),
            "ops": frozenset({"ops"}),
        },
    ),
    st.dictionaries(
        st.sampled_from(ROLES),
        st.tuples(
            st.lists(st.sampled_from(["alice", "agent-*", "b*", "carol"]), max_size=2),
            st.lists(st.sampled_from(["team", "bots"]), max_size=1),
        ),
    ),
    st.dictionaries(
        st.sampled_from(["team", "bots"]),
        st.lists(st.sampled_from(["bob", "agent-?", "alice"]), min_size=1, max_size=2),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    rules=rule_lists(),
    approvals=approval_tables,
    rbac=rbacs,
    batch=st.lists(
        st.tuples(
            requests,
            any_specs,
            st.lists(st.sampled_from(PRINCIPALS), max_size=2).map(tuple),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_memoized_plans_and_cold_decisions_agree(
    rules: list[Rule],
    approvals: ApprovalTable,
    rbac: Rbac,
    batch: list[tuple[PolicyRequest, CapabilitySpec, tuple[str, ...]]],
) -> None:
    policy = Policy(rules=tuple(rules), rbac=rbac, approvals=approvals)
    warm = PolicyEngine(policy)
    cold = PolicyEngine(policy)
    for request, spec, chain in batch * 2:  # the second pass is served from warm's memo
        request = PolicyRequest(
            principal=request.principal,
            capability=spec,
            inputs=request.inputs,
            roles=request.roles,
            workflow_id=request.workflow_id,
            on_behalf_of=chain,
        )
        cold.compiled.forget(capabilities=True)
        assert cold.decide(request) == warm.decide(request)
        if not chain:
            held = rbac.roles_of(request.principal) | rbac.expand(request.roles)
            expected = naive(
                policy,
                PolicyRequest(request.principal, spec, request.inputs, held, request.workflow_id),
            )
            assert warm.decide(request) == expected


@settings(max_examples=200, deadline=None)
@given(
    rbac=rbacs,
    principal=st.sampled_from([*PRINCIPALS, "carol", "agent-10", "agent-", "bots", "b", ""]),
)
def test_role_lookup_tables_agree_with_matching_every_binding(rbac: Rbac, principal: str) -> None:
    groups = rbac.groups_of(principal)
    bound = [
        role.name
        for role in rbac.roles.values()
        if role.principals.matches(principal) or not role.groups.isdisjoint(groups)
    ]
    assert rbac.roles_of(principal) == rbac.expand(bound)
    rbac.forget()
    assert rbac.roles_of(principal) == rbac.expand(bound)


@settings(max_examples=200, deadline=None)
@given(rules=rule_lists(), batch=st.lists(requests, min_size=1, max_size=8))
def test_unbucketed_rules_merged_per_capability_decide_as_when_merged_at_load(
    rules: list[Rule], batch: list[PolicyRequest]
) -> None:
    policy = Policy(rules=tuple(rules))
    apart = CompiledPolicy(policy, merge_rest=0)
    for request in batch:
        plan = apart.plan(request.capability, request.principal, request.roles, ())
        decision = apart.evaluate(plan, request.inputs, request.workflow_id)
        assert decision == naive(policy, request)
