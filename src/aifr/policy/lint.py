"""``aifr policy check``: schema errors, shadowed rules, unknown capabilities and roles.

Shadowing is decided conservatively: an earlier rule shadows a later one only when
every request the later rule matches provably matches the earlier one too (field by
field: globs, role sets, operation and risk sets, tags, input conditions). A finding
is therefore always real; some shadowing through unusual globs may go unreported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import JsonValue

from aifr.capabilities import OperationType, RiskLevel
from aifr.errors import PolicyError
from aifr.policy.decision import Decision
from aifr.policy.loader import Policy, load_policy
from aifr.policy.rules import GlobSet, Match, Rule, SourceRef

__all__ = ["LintFinding", "lint_directory", "lint_policy", "shadows"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class LintFinding:
    """One problem found in a policy."""

    severity: Severity
    code: str
    message: str
    source: SourceRef | None = None
    rule_id: str | None = None

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON form."""
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "file": self.source.file if self.source else None,
            "line": self.source.line if self.source else None,
            "field": self.source.field if self.source else None,
            "rule_id": self.rule_id,
        }

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        field = f"{self.source.field}: " if self.source and self.source.field else ""
        return f"{where}{self.severity} [{self.code}] {field}{self.message}"


def lint_directory(
    directory: Path | str, *, known_capabilities: Iterable[str] | None = None
) -> list[LintFinding]:
    """Load ``directory`` and lint it; load errors become ``schema`` findings."""
    try:
        policy = load_policy(directory)
    except PolicyError as exc:
        errors = exc.details.get("errors")
        if not isinstance(errors, list):
            return [LintFinding("error", "schema", exc.message)]
        findings = []
        for item in errors:
            assert isinstance(item, dict)  # noqa: S101  # shape written by the loader
            source = SourceRef(
                str(item["file"]),
                int(str(item["line"])),
                int(str(item["column"])),
                str(item["field"]),
            )
            findings.append(LintFinding("error", "schema", str(item["message"]), source))
        return findings
    return lint_policy(policy, known_capabilities=known_capabilities)


def lint_policy(
    policy: Policy, *, known_capabilities: Iterable[str] | None = None
) -> list[LintFinding]:
    """Every finding for a loaded policy, in file order."""
    findings = list(_shadowed(policy.rules))
    findings.extend(_no_approvers(policy))
    findings.extend(_unheld_quorum_roles(policy))
    defined = set(policy.rbac.roles)
    findings.extend(
        LintFinding(
            "warning",
            "unknown_role",
            f"role {ref.role!r} is not defined under 'roles' (only tokens could grant it)",
            ref.source,
        )
        for ref in policy.role_references
        if ref.role not in defined
    )
    if known_capabilities is not None:
        known = sorted(set(known_capabilities))
        for pattern, source in policy.capability_references:
            globs = GlobSet([pattern])
            if not any(globs.matches(capability_id) for capability_id in known):
                findings.append(
                    LintFinding(
                        "warning",
                        "unknown_capability",
                        f"capability pattern {pattern!r} matches no registered capability",
                        source,
                    )
                )
    return findings


def _shadowed(rules: tuple[Rule, ...]) -> Iterable[LintFinding]:
    for position, rule in enumerate(rules):
        for earlier in rules[:position]:
            if not shadows(earlier.when, rule.when):
                continue
            same = earlier.decision is rule.decision
            yield LintFinding(
                "warning" if same else "error",
                "redundant" if same else "unreachable",
                f"rule {rule.id!r} can never match first: rule {earlier.id!r}"
                + (f" ({earlier.source})" if earlier.source else "")
                + " matches every request it does"
                + (
                    ", with the same decision" if same else f" and decides {earlier.decision.value}"
                ),
                rule.source,
                rule.id,
            )
            break


def _unheld_quorum_roles(policy: Policy) -> Iterable[LintFinding]:
    """``quorum_roles`` naming a role nobody is bound to: such requests stay pending."""
    rbac = policy.rbac
    bound = {
        held
        for role in rbac.roles.values()
        if role.principals.patterns or role.groups
        for held in rbac.expand([role.name])
    }
    entries: list[tuple[str, tuple[tuple[str, int], ...], SourceRef | None, str | None]] = [
        (f"rule {rule.id!r}", rule.quorum_roles, rule.source, rule.id) for rule in policy.rules
    ]
    entries += [
        (f"approvals for {level.value}", table.quorum_roles, None, None)
        for level, table in policy.approvals.rules.items()
    ]
    for what, quorum_roles, source, rule_id in entries:
        for role, count in quorum_roles:
            if role not in bound:
                yield LintFinding(
                    "warning",
                    "quorum_role_unheld",
                    f"{what} needs {count} approver(s) with role {role!r} (quorum_roles), but "
                    "no principal or group is bound to it: only a token's roles could meet "
                    "it, else such requests stay pending until they expire",
                    source,
                    rule_id,
                )


def _no_approvers(policy: Policy) -> Iterable[LintFinding]:
    for rule in policy.rules:
        if rule.decision is not Decision.REQUIRE_APPROVAL or not rule.approvers:
            continue
        for risk in sorted(rule.when.risks or set(RiskLevel), key=lambda r: r.rank):
            table = policy.approvals.for_risk(risk)
            if table is not None and not set(rule.approvers) & set(table.roles):
                yield LintFinding(
                    "error",
                    "no_approvers",
                    f"rule {rule.id!r} requires approval by {list(rule.approvers)}, but only "
                    f"{list(table.roles)} may approve {risk.value} risk: such requests are denied",
                    rule.source,
                    rule.id,
                )
                break


def _glob_covers(outer: GlobSet | None, inner: GlobSet | None) -> bool:
    if outer is None:
        return True
    if inner is None:
        return False
    simple = [p for p in outer.patterns if not any(ch in p for ch in "?[]")]
    starred = GlobSet(simple)
    # An outer pattern with only '*' wildcards that matches the inner pattern's text
    # matches every string the inner pattern does.
    return all(starred.matches(p) for p in inner.patterns)


def _subset(
    inner: frozenset[Any] | None, outer: frozenset[Any] | None, full: frozenset[Any]
) -> bool:
    return (inner if inner is not None else full) <= (outer if outer is not None else full)


def shadows(earlier: Match, later: Match) -> bool:
    """True when ``earlier`` provably matches every request that ``later`` matches."""
    return (
        _glob_covers(earlier.capabilities, later.capabilities)
        and _glob_covers(earlier.principals, later.principals)
        and _glob_covers(earlier.workflows, later.workflows)
        and _glob_covers(earlier.on_behalf_of, later.on_behalf_of)
        and _subset(later.operations, earlier.operations, frozenset(OperationType))
        and _subset(later.risks, earlier.risks, frozenset(RiskLevel))
        and (earlier.roles is None or (later.roles is not None and later.roles <= earlier.roles))
        and (earlier.tags is None or (later.tags is not None and earlier.tags <= later.tags))
        and (earlier.is_delegated is None or earlier.is_delegated == later.is_delegated)
        and set(earlier.inputs) <= set(later.inputs)
    )
