"""The compiled rule index: a decision costs about the same at 10 rules as at 1,000.

Everything a decision needs that depends only on the policy is built when it loads:

* each rule becomes a compiled entry holding two tests, closures over only the
  conditions the rule has: the *static* test (principal, roles, delegation, tags, and
  capability globs too complex to bucket) and the *context* test (workflow id and
  inputs), plus its decision, reason and approval details for every risk level;
* rules are bucketed by capability glob: exact ids and the literal heads of ``head*``
  globs. Each bucket holds, in rule order, its own rules, those of every shorter head
  covering it and the rules without a bucketable glob, split by operation and risk
  level; the longest head that matches an id thus gives every rule that may apply;
* literal role bindings are expanded per principal (:class:`aifr.policy.approvers.Rbac`).

The first time a capability spec is decided, its candidate list (one bucket lookup) and
facts are kept per fingerprint, a memo bounded by the registry, not by traffic. The
first time a (capability, principal, roles, chain) is decided, the candidates are walked
with their static tests up to the first rule without a context test, since nothing after
it can be reached. The rules that passed form a *plan*: ``(context test, decision)``
steps in rule order, ending with a step that always holds; the first step whose test
holds decides. When the first rule that applies has no context test, its one-step plan
was built at load and the walk allocates nothing. Plans are memoized, so a repeated
request is one dictionary lookup plus its context tests. :func:`first_match` is the
naive reference the property tests hold every path to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aifr.capabilities import CapabilitySpec, OperationType, RiskLevel
from aifr.policy.decision import Decision, PolicyDecision
from aifr.policy.loader import Policy
from aifr.policy.ratelimit import RateLimit
from aifr.policy.rules import Match, RequestView, Rule

__all__ = [
    "CompiledPolicy",
    "ContextTest",
    "Plan",
    "RuleIndex",
    "StaticTest",
    "Step",
    "default_decision",
    "first_match",
    "rule_decision",
    "view_of",
]

_MAX_PLANS = 65_536
_HIGH = RiskLevel.HIGH  # a global: reading an enum member off its class costs more

StaticTest = Callable[[str, frozenset[str], tuple[str, ...], str, Sequence[str]], bool]
"""``(principal, roles held, delegation chain, capability id, capability tags) -> holds``."""

ContextTest = Callable[[Mapping[str, Any], str | None], bool]
"""``(inputs, workflow id) -> holds``."""

Step = tuple[ContextTest | None, PolicyDecision]
"""A plan step: the decision applies when the test holds (``None``: always)."""

Plan = tuple[tuple[Step, ...], tuple[RateLimit, ...]]
"""What remains to check for one capability and subject: context steps (the last always
holds) and the rate limits that count the request unless their context test fails."""

_ApprovalFor = str | None  # the capability id when the spec itself demands an approval


class RuleIndex:
    """Rules bucketed by capability glob; :meth:`candidates` keeps rule order.

    ``exact`` maps capability ids, ``prefix`` the literal heads of ``head*`` globs, and
    ``rest`` lists rules without capability globs or with globs too complex to bucket.
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self.exact: dict[str, list[int]] = {}
        self.prefix: dict[str, list[int]] = {}
        self.rest: list[int] = []
        for position, rule in enumerate(self.rules):
            self._add(position, rule)
        self.prefix_lengths = tuple(sorted({len(p) for p in self.prefix}))

    def _add(self, position: int, rule: Rule) -> None:
        globs = rule.when.capabilities
        if globs is None:
            self.rest.append(position)
            return
        simple = []
        for pattern in globs.patterns:
            head = pattern[:-1] if pattern.endswith("*") else pattern
            if any(ch in head for ch in "*?["):
                self.rest.append(position)  # a complex glob: always a candidate
                return
            simple.append((pattern.endswith("*"), head))
        for is_prefix, head in simple:
            bucket = self.prefix if is_prefix else self.exact
            positions = bucket.setdefault(head, [])
            if not positions or positions[-1] != position:  # two globs, one rule
                positions.append(position)

    def candidates(self, capability_id: str) -> list[int]:
        """Positions of rules whose capability globs may match ``capability_id``, in order."""
        found = set(self.rest)
        found.update(self.exact.get(capability_id, ()))
        for length in self.prefix_lengths:
            if length > len(capability_id):
                break
            found.update(self.prefix.get(capability_id[:length], ()))
        return sorted(found)


# -- decisions ---------------------------------------------------------------------------


def _rule_decision(
    policy: Policy, rule: Rule, risk: RiskLevel, approval_for: _ApprovalFor
) -> PolicyDecision:
    decision = rule.decision
    reason = rule.reason
    if decision is Decision.ALLOW and approval_for is not None:
        decision = Decision.REQUIRE_APPROVAL
        reason = f"{reason}; but {approval_for} declares that every call needs a human approval"
    if decision is not Decision.REQUIRE_APPROVAL:
        return PolicyDecision(decision, rule.id, reason)
    return _approval(policy, risk, rule.id, reason, rule)


def rule_decision(policy: Policy, rule: Rule, spec: CapabilitySpec) -> PolicyDecision:
    """The decision ``rule`` gives for ``spec``, with approval details filled in."""
    approval_for = spec.id if spec.requires_approval else None
    return _rule_decision(policy, rule, spec.effective_risk, approval_for)


def _approval(
    policy: Policy, risk: RiskLevel, rule_id: str | None, reason: str, rule: Rule | None
) -> PolicyDecision:
    table = policy.approvals.for_risk(risk)
    roles: tuple[str, ...] = rule.approvers if rule is not None else ()
    if table is not None:
        roles = tuple(r for r in roles if r in table.roles) if roles else table.roles
        if not roles:
            return PolicyDecision(
                Decision.DENY,
                rule_id,
                f"{reason}; but no role may approve it: the rule's approvers "
                f"{list(rule.approvers if rule else ())} share none with the approvers for "
                f"{risk.value} risk {list(table.roles)}",
            )
    quorum = max((rule.quorum if rule else None) or 1, table.quorum if table else 1)
    ttl = (rule.approval_ttl_s if rule else None) or (table.ttl_s if table else None)
    # Separation of duties: the rule's quorum_roles, else the table's. Each named role
    # may approve, and the plain quorum is at least the votes they add up to.
    quorum_roles = (rule.quorum_roles if rule else ()) or (table.quorum_roles if table else ())
    if quorum_roles:
        roles = tuple(sorted({*roles, *(role for role, _ in quorum_roles)}))
        quorum = max(quorum, sum(count for _, count in quorum_roles))
    return PolicyDecision(
        Decision.REQUIRE_APPROVAL, rule_id, reason, roles, quorum, ttl, quorum_roles=quorum_roles
    )


def _default_decision(
    policy: Policy, risk: RiskLevel, approval_for: _ApprovalFor
) -> PolicyDecision:
    decision = policy.defaults[risk]
    reason = f"no rule matched; the default for {risk.value} risk is {decision.value}"
    if decision is Decision.ALLOW and approval_for is not None:
        decision = Decision.REQUIRE_APPROVAL
        reason += f", but {approval_for} declares that every call needs a human approval"
    if decision is Decision.REQUIRE_APPROVAL:
        return _approval(policy, risk, None, reason, None)
    return PolicyDecision(decision, None, reason)


def default_decision(policy: Policy, spec: CapabilitySpec) -> PolicyDecision:
    """The decision when no rule matches: the configured default for the spec's risk."""
    approval_for = spec.id if spec.requires_approval else None
    return _default_decision(policy, spec.effective_risk, approval_for)


# -- the naive reference -----------------------------------------------------------------


def view_of(
    spec: CapabilitySpec,
    principal: str,
    roles: frozenset[str],
    inputs: Mapping[str, Any],
    workflow_id: str | None,
    on_behalf_of: tuple[str, ...],
) -> RequestView:
    """A :class:`RequestView` for one principal of a request."""
    return RequestView(
        principal=principal,
        roles=roles,
        capability_id=spec.id,
        operation=spec.operation_type,
        risk=spec.effective_risk,
        tags=frozenset(spec.tags),
        inputs=inputs,
        workflow_id=workflow_id,
        on_behalf_of=on_behalf_of,
    )


def first_match(rules: Sequence[Rule], view: RequestView) -> Rule | None:
    """The naive reference: the first rule whose whole ``when`` holds, in order."""
    for rule in rules:
        if rule.when.matches(view):
            return rule
    return None


# -- compiled tests ----------------------------------------------------------------------


def _all_static(checks: Sequence[StaticTest]) -> StaticTest | None:
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks

        def both(
            principal: str,
            held: frozenset[str],
            chain: tuple[str, ...],
            capability_id: str,
            tags: Sequence[str],
        ) -> bool:
            return first(principal, held, chain, capability_id, tags) and second(
                principal, held, chain, capability_id, tags
            )

        return both
    every = tuple(checks)

    def each(
        principal: str,
        held: frozenset[str],
        chain: tuple[str, ...],
        capability_id: str,
        tags: Sequence[str],
    ) -> bool:
        return all(check(principal, held, chain, capability_id, tags) for check in every)

    return each


def _roles_test(roles: frozenset[str]) -> StaticTest:
    if len(roles) == 1:
        (role,) = roles
        return lambda _p, held, _c, _i, _t: role in held
    disjoint = roles.isdisjoint
    return lambda _p, held, _c, _i, _t: not disjoint(held)


def _static_test(when: Match, *, check_capability: bool) -> StaticTest | None:
    """The static part of ``when`` as one closure (``None`` when it always holds).

    Operation and risk are left out: the index buckets by them. Capability globs are
    tested only when ``check_capability`` is true (bucket membership proves them).
    """
    checks: list[StaticTest] = []
    if check_capability and when.capabilities is not None:
        capability = when.capabilities.matcher
        checks.append(lambda _p, _h, _c, capability_id, _t: capability(capability_id))
    if when.tags is not None:
        needs = when.tags.issubset
        checks.append(lambda _p, _h, _c, _i, tags: needs(tags))
    if when.principals is not None:
        principal_matches = when.principals.matcher
        checks.append(lambda principal, _h, _c, _i, _t: principal_matches(principal))
    if when.roles is not None:
        checks.append(_roles_test(when.roles))
    if when.is_delegated is not None:
        delegated = when.is_delegated
        checks.append(lambda _p, _h, chain, _i, _t: bool(chain) == delegated)
    if when.on_behalf_of is not None:
        link_matches = when.on_behalf_of.matches_any
        checks.append(lambda _p, _h, chain, _i, _t: link_matches(chain))
    return _all_static(checks)


def _context_test(when: Match) -> ContextTest | None:
    """The workflow and input conditions of ``when`` as one closure (``None``: none)."""
    tests: list[ContextTest] = []
    if when.workflows is not None:
        workflow_matches = when.workflows.matcher
        tests.append(lambda _i, workflow: workflow is not None and workflow_matches(workflow))
    tests.extend(condition.matches for condition in when.inputs)
    if not tests:
        return None
    if len(tests) == 1:
        return tests[0]
    every = tuple(tests)
    return lambda inputs, workflow: all(test(inputs, workflow) for test in every)


def _applies(when: Match, operation: OperationType, risk: RiskLevel) -> bool:
    return (when.operations is None or operation in when.operations) and (
        when.risks is None or risk in when.risks
    )


class _Entry:
    """One rule, compiled: its tests and its decision for every risk level."""

    __slots__ = ("context", "decisions", "plans", "position", "rule", "static")

    def __init__(
        self,
        policy: Policy,
        position: int,
        rule: Rule,
        *,
        bucketed: bool,
        defaults: Mapping[RiskLevel, tuple[Step, ...]],
    ) -> None:
        self.position = position
        self.rule = rule
        self.static = _static_test(rule.when, check_capability=not bucketed)
        self.context = context = _context_test(rule.when)
        self.decisions = {risk: _rule_decision(policy, rule, risk, None) for risk in RiskLevel}
        # The whole plan when this is the only rule that applies: its step, then the
        # default when it tests a context.
        self.plans: dict[RiskLevel, tuple[Step, ...]] = {
            risk: ((context, decision), *defaults[risk]) if context else ((None, decision),)
            for risk, decision in self.decisions.items()
        }


class _LimitEntry:
    """One rate limit, compiled like a rule."""

    __slots__ = ("limit", "static")

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.static = _static_test(limit.when, check_capability=True)


Buckets = dict[tuple[OperationType, RiskLevel], tuple[_Entry, ...]]


def _split(entries: Sequence[_Entry], positions: Sequence[int]) -> Buckets:
    buckets: Buckets = {}
    for operation in OperationType:
        for risk in RiskLevel:
            chosen = tuple(
                entries[p] for p in positions if _applies(entries[p].rule.when, operation, risk)
            )
            if chosen:
                buckets[(operation, risk)] = chosen
    return buckets


class _Node:
    """The rules for the ids under one literal capability head, split by operation and risk.

    A head is an exact id or the ``head`` of a ``head*`` glob. ``parent`` is the node of
    the longest shorter ``head*`` glob that covers every id this one covers. A node's
    lists include its parent's rules (and so every ancestor's) and ``rest``, so the
    longest head that matches an id gives all its candidates in one list.
    """

    __slots__ = ("buckets", "positions")

    def __init__(
        self,
        entries: Sequence[_Entry],
        own: Sequence[int],
        parent: _Node | None,
        rest: Sequence[int],
    ) -> None:
        inherited: tuple[int, ...] = parent.positions if parent is not None else ()
        self.positions: tuple[int, ...] = tuple(sorted({*own, *rest, *inherited}))
        self.buckets = _split(entries, self.positions)


class _Target:
    """One capability spec as the index sees it: its facts and the rules that may apply.

    Built the first time a spec is decided and kept per fingerprint: the set of specs is
    the registry's, whatever the traffic, so this memo stays small.
    """

    __slots__ = (
        "approval_for",
        "capability_id",
        "default",
        "entries",
        "rate_limits",
        "risk",
        "tags",
    )

    def __init__(self, compiled: CompiledPolicy, spec: CapabilitySpec) -> None:
        self.capability_id = capability_id = spec.id
        declared = spec.risk  # spec.effective_risk and spec.requires_approval, read once
        self.risk = risk = _HIGH if declared is None else declared.level
        self.approval_for: _ApprovalFor = (
            capability_id if declared is not None and declared.requires_approval else None
        )
        self.tags = spec.tags
        operation = spec.operation_type
        self.entries = compiled.candidates(capability_id, operation, risk)
        self.rate_limits = (
            tuple(
                entry
                for entry in compiled.rate_limit_entries
                if _applies(entry.limit.when, operation, risk)
            )
            if compiled.rate_limit_entries
            else ()
        )
        self.default = (
            compiled.defaults[risk]
            if self.approval_for is None
            else ((None, _default_decision(compiled.policy, risk, self.approval_for)),)
        )

    def plan(
        self, policy: Policy, principal: str, held: frozenset[str], chain: tuple[str, ...]
    ) -> Plan:
        """The plan for one subject: the rules whose static tests hold, in order.

        The walk stops at the first such rule without a context test: nothing after it
        can be reached.
        """
        capability_id, tags = self.capability_id, self.tags
        found: list[_Entry] = []
        for entry in self.entries:
            static = entry.static
            if static is None or static(principal, held, chain, capability_id, tags):
                found.append(entry)
                if entry.context is None:
                    break
        if not found:
            steps = self.default
        elif len(found) == 1 and self.approval_for is None:
            steps = found[0].plans[self.risk]  # built at load: the common case
        else:
            steps = self._steps(policy, found)
        if not self.rate_limits:
            return steps, ()
        return steps, tuple(
            entry.limit
            for entry in self.rate_limits
            if entry.static is None or entry.static(principal, held, chain, capability_id, tags)
        )

    def _steps(self, policy: Policy, found: list[_Entry]) -> tuple[Step, ...]:
        risk, approval_for = self.risk, self.approval_for
        steps: list[Step] = [
            (
                entry.context,
                entry.decisions[risk]
                if approval_for is None
                else _rule_decision(policy, entry.rule, risk, approval_for),
            )
            for entry in found
        ]
        if steps[-1][0] is not None:
            steps.extend(self.default)
        return tuple(steps)


class CompiledPolicy:
    """A policy plus its index and memoized plans; safe to share between threads.

    ``merge_rest`` bounds how many rules without a bucketable capability glob are copied
    into every bucket at load (beyond it they are merged per capability instead).

    The memos only grow by whole entries (a race computes an entry twice, never a wrong
    one) and are dropped when they exceed a bound.
    """

    def __init__(self, policy: Policy, *, merge_rest: int = 32) -> None:
        self.policy = policy
        self.index = RuleIndex(policy.rules)
        index = self.index
        rest = set(index.rest)
        self.defaults: dict[RiskLevel, tuple[Step, ...]] = {
            risk: ((None, _default_decision(policy, risk, None)),) for risk in RiskLevel
        }
        entries = [
            _Entry(policy, position, rule, bucketed=position not in rest, defaults=self.defaults)
            for position, rule in enumerate(index.rules)
        ]
        self._longest_first = tuple(reversed(index.prefix_lengths))
        self._prefix: dict[str, _Node] = {}
        # Up to merge_rest rules without a bucketable glob are merged into every bucket at
        # load; more are merged per capability, when it is first decided.
        self._rest_merged = len(index.rest) <= merge_rest
        rest_positions = index.rest if self._rest_merged else ()
        for head in sorted(index.prefix, key=len):  # a parent before its children
            parent = self._longest_head(head, len(head) - 1)
            self._prefix[head] = _Node(entries, index.prefix[head], parent, rest_positions)
        self._exact = {
            cid: _Node(entries, positions, self._longest_head(cid, len(cid)), rest_positions)
            for cid, positions in index.exact.items()
        }
        self._rest = _split(entries, index.rest)
        self.rate_limit_entries = tuple(_LimitEntry(limit) for limit in policy.rate_limits)
        self._rbac = policy.rbac
        self._targets: dict[str, _Target] = {}
        self.plans: dict[tuple[str, str, frozenset[str], tuple[str, ...]], Plan] = {}

    def effective_roles(self, principal: str, extra: frozenset[str]) -> frozenset[str]:
        """Roles from bindings plus ``extra`` (e.g. from a token), with inheritance."""
        rbac = self._rbac
        bound = rbac.roles_of(principal)
        return bound | rbac.expand_set(extra) if extra else bound

    def forget(self, *, capabilities: bool = False) -> None:
        """Drop the memoized plans and principals, and with ``capabilities`` the specs too.

        Benchmarks call it to measure requests seen for the first time.
        """
        self.plans.clear()
        self._rbac.forget()
        if capabilities:
            self._targets.clear()

    def _longest_head(self, capability_id: str, longest: int) -> _Node | None:
        """The bucket of the longest ``head*`` glob covering ``capability_id``."""
        get_prefix = self._prefix.get
        for length in self._longest_first:
            if length <= longest:
                node = get_prefix(capability_id[:length])
                if node is not None:
                    return node
        return None

    def candidates(
        self, capability_id: str, operation: OperationType, risk: RiskLevel
    ) -> tuple[_Entry, ...]:
        """The compiled rules that may apply to a capability, in rule order."""
        key = (operation, risk)
        node = self._exact.get(capability_id) or self._longest_head(
            capability_id, len(capability_id)
        )
        rest = self._rest.get(key, ())
        if node is None:
            return rest
        bucketed = node.buckets.get(key, ())
        if self._rest_merged or not bucketed or not rest:
            return bucketed or rest
        return tuple(sorted(bucketed + rest, key=_position))  # the two never share a rule

    def plan(
        self,
        spec: CapabilitySpec,
        principal: str,
        roles: frozenset[str],
        on_behalf_of: tuple[str, ...],
    ) -> Plan:
        """The plan for one capability and subject (``roles`` as given by the caller).

        Plans are memoized; a first-seen subject costs a role lookup and one walk over
        the capability's candidate rules.
        """
        key = (spec.fingerprint, principal, roles, on_behalf_of)
        plans = self.plans
        found = plans.get(key)
        if found is not None:
            return found
        target = self._targets.get(spec.fingerprint) or self._target(spec)
        rbac = self._rbac
        held = rbac.roles_of(principal)
        if roles:
            held = held | rbac.expand_set(roles)
        found = target.plan(self.policy, principal, held, on_behalf_of)
        # No lock: a dict assignment is atomic, and a racing clear only drops entries.
        if len(plans) >= _MAX_PLANS:
            plans.clear()
        plans[key] = found
        return found

    def _target(self, spec: CapabilitySpec) -> _Target:
        target = _Target(self, spec)
        if len(self._targets) >= _MAX_PLANS:
            self._targets.clear()
        self._targets[spec.fingerprint] = target
        return target

    @staticmethod
    def evaluate(plan: Plan, inputs: Mapping[str, Any], workflow_id: str | None) -> PolicyDecision:
        """Walk a plan's context tests; the first that holds decides (the last always does)."""
        steps = plan[0]
        for context, decision in steps:
            if context is None or context(inputs, workflow_id):
                return decision
        return steps[-1][1]  # not reached: the last step has no test


def _position(entry: _Entry) -> int:
    return entry.position
