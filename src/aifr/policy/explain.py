"""Why the engine decided what it did: every rule tried, in order, and why it missed.

``explain`` walks the rules the plain way (no index) for each principal of the request
(the caller, then each delegation link), stopping at the first match, and pairs that
with the engine's own answer (taken with :meth:`PolicyEngine.peek`, so explaining
never spends a rate-limit token).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import JsonValue

from aifr.policy.decision import PolicyDecision, PolicyRequest
from aifr.policy.engine import PolicyEngine
from aifr.policy.index import default_decision, rule_decision, view_of
from aifr.policy.rules import SourceRef

__all__ = ["Explanation", "LinkExplanation", "RuleTrace", "explain"]


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """One rule tried: whether it matched and, if not, the first condition that failed."""

    rule_id: str
    decision: str
    matched: bool
    why_not: str | None
    source: SourceRef | None

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON form."""
        return {
            "rule_id": self.rule_id,
            "decision": self.decision,
            "matched": self.matched,
            "why_not": self.why_not,
            "source": str(self.source) if self.source else None,
        }


@dataclass(frozen=True, slots=True)
class LinkExplanation:
    """The rules as one principal of the request sees them, and that principal's answer."""

    principal: str
    roles: tuple[str, ...]
    traces: tuple[RuleTrace, ...]
    decision: PolicyDecision

    @property
    def matched(self) -> RuleTrace | None:
        """The rule that matched, if any."""
        return next((t for t in self.traces if t.matched), None)


@dataclass(frozen=True, slots=True)
class Explanation:
    """The engine's answer with the reasoning behind it."""

    decision: PolicyDecision
    links: tuple[LinkExplanation, ...]
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON form (``aifr policy explain --json``)."""
        d = self.decision
        return {
            "decision": d.decision.value,
            "rule_id": d.rule_id,
            "reason": d.reason,
            "approver_roles": list(d.approver_roles),
            "quorum": d.quorum,
            "approval_ttl_s": d.approval_ttl_s,
            "grant_id": d.grant_id,
            "quorum_roles": dict(d.quorum_roles),
            "principals": [
                {
                    "principal": link.principal,
                    "roles": list(link.roles),
                    "decision": link.decision.decision.value,
                    "rule_id": link.decision.rule_id,
                    "rules": [t.to_dict() for t in link.traces],
                }
                for link in self.links
            ],
            "notes": list(self.notes),
        }

    def lines(self) -> list[str]:
        """A plain-text rendering, one line per rule tried."""
        out = []
        for link in self.links:
            roles = ", ".join(link.roles) or "none"
            out.append(f"principal {link.principal} (roles: {roles})")
            for trace in link.traces:
                where = f"  [{trace.source}]" if trace.source else ""
                if trace.matched:
                    out.append(f"  MATCH  {trace.rule_id} -> {trace.decision}{where}")
                else:
                    out.append(f"  skip   {trace.rule_id}: {trace.why_not}{where}")
            if link.matched is None:
                out.append(f"  (no rule matched) -> default {link.decision.decision.value}")
        out.extend(f"note: {note}" for note in self.notes)
        d = self.decision
        out.append(f"decision: {d.decision.value} (rule {d.rule_id or 'default'}): {d.reason}")
        if d.approver_roles:
            out.append(f"approvers: {', '.join(d.approver_roles)}; quorum {d.quorum}")
        if d.quorum_roles:
            needs = ", ".join(f"{count} {role}" for role, count in d.quorum_roles)
            out.append(f"separation of duties: needs {needs} (distinct approvers)")
        return out


def explain(engine: PolicyEngine, request: PolicyRequest) -> Explanation:
    """Explain how ``engine`` decides ``request`` right now."""
    policy = engine.compiled.policy
    spec = request.capability
    links = []
    for position, principal in enumerate((request.principal, *request.on_behalf_of)):
        roles = engine.compiled.effective_roles(
            principal, request.roles if position == 0 else frozenset()
        )
        view = view_of(
            spec, principal, roles, request.inputs, request.workflow_id, request.on_behalf_of
        )
        traces = []
        decision = default_decision(policy, spec)
        for rule in policy.rules:
            why_not = rule.when.why_not(view)
            traces.append(
                RuleTrace(rule.id, rule.decision.value, why_not is None, why_not, rule.source)
            )
            if why_not is None:
                decision = rule_decision(policy, rule, spec)
                break
        links.append(LinkExplanation(principal, tuple(sorted(roles)), tuple(traces), decision))
    final = engine.peek(request)
    notes = []
    if request.on_behalf_of:
        notes.append(
            "delegated request: the most restrictive answer of "
            + " -> ".join((request.principal, *request.on_behalf_of))
            + " applies"
        )
    if final.grant_id:
        notes.append(f"grant {final.grant_id} turned REQUIRE_APPROVAL into ALLOW")
    if request.secrets:
        ungranted = (final.rule_id or "").startswith("secret:")
        notes.append(
            f"secret references checked before the rules: {final.reason}"
            if ungranted
            else "secret references " + ", ".join(sorted(request.secrets)) + ": all granted"
        )
    first = links[0]
    for limit in policy.rate_limits:
        view = view_of(
            spec,
            request.principal,
            frozenset(first.roles),
            request.inputs,
            request.workflow_id,
            request.on_behalf_of,
        )
        if limit.when.matches(view):
            left = engine.rate_limit_tokens(limit, request.principal, spec.id)
            notes.append(
                f"rate limit {limit.name}: {limit.limit} per {limit.per_s:g}s, "
                f"{left:.1f} of {limit.burst} tokens left"
            )
    return Explanation(final, tuple(links), tuple(notes))
