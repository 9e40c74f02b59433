"""RBAC (roles bound to principals and groups, with inheritance) and who may approve.

A role's closure is computed once at load: holding ``admin`` that inherits ``approver``
means holding both. The engine asks ``roles_of`` on every decision, so bindings are
indexed at load: literal names (principals and group members) map to their expanded
roles, ``head*`` globs sit in a prefix table, and only other globs are matched one by
one. Without wildcard bindings a principal costs one dictionary lookup; with them, a
first-seen principal costs one lookup per prefix length and is then memoized. A reload
builds a new :class:`Rbac`, so the memo never outlives the policy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from aifr.capabilities import RiskLevel
from aifr.errors import ApprovalError, ErrorCode
from aifr.policy.decision import PolicyDecision
from aifr.policy.rules import GlobSet

__all__ = [
    "ApprovalRule",
    "ApprovalTable",
    "Rbac",
    "RoleDef",
    "authorize_approver",
    "missing_votes",
]

_MAX_CACHED_PRINCIPALS = 65_536
_NO_ROLES: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RoleDef:
    """One role: the principals (globs) and groups bound to it, and the roles it inherits."""

    name: str
    principals: GlobSet
    groups: frozenset[str] = frozenset()
    inherits: tuple[str, ...] = ()


class Rbac:
    """Role bindings, groups and inheritance, compiled.

    ``closure`` must already be acyclic and complete (the loader checks); every role a
    principal is bound to, directly or through a group, expands to its closure.
    """

    def __init__(
        self,
        roles: Mapping[str, RoleDef],
        groups: Mapping[str, GlobSet],
        closure: Mapping[str, frozenset[str]],
    ) -> None:
        self.roles = dict(roles)
        self.groups = dict(groups)
        self.closure = dict(closure)
        self._cache: dict[str, frozenset[str]] = {}
        self._expanded: dict[frozenset[str], frozenset[str]] = {}
        self._lock = threading.Lock()
        self._roles_by_group: dict[str, list[str]] = {}
        for role in self.roles.values():
            for group in role.groups:
                self._roles_by_group.setdefault(group, []).append(role.name)
        # Bindings by kind: literal names, ``head*`` prefixes, and other globs.
        direct: dict[str, set[str]] = {}
        self._prefixed: dict[str, set[str]] = {}
        self._globbed: list[tuple[tuple[str, ...], Callable[[str], bool]]] = []
        for role in self.roles.values():
            self._bind(direct, role.principals, (role.name,))
        for group, members in self.groups.items():
            self._bind(direct, members, tuple(self._roles_by_group.get(group, ())))
        self._prefix_lengths = tuple(sorted({len(head) for head in self._prefixed}))
        self._wildcards = bool(self._prefixed or self._globbed)
        # One frozenset per distinct role set, shared by every principal holding it.
        interned: dict[frozenset[str], frozenset[str]] = {}
        self._literal: dict[str, frozenset[str]] = {}
        for name, bound in direct.items():
            held = self.expand(bound)
            self._literal[name] = interned.setdefault(held, held)

    def _bind(self, direct: dict[str, set[str]], members: GlobSet, names: tuple[str, ...]) -> None:
        for pattern in members.patterns:
            head = pattern[:-1]
            if pattern in members.literals:
                direct.setdefault(pattern, set()).update(names)
            elif pattern.endswith("*") and not any(ch in head for ch in "*?["):
                self._prefixed.setdefault(head, set()).update(names)
            else:
                self._globbed.append((names, GlobSet([pattern]).matcher))

    @classmethod
    def empty(cls) -> Rbac:
        """No roles, no groups."""
        return cls({}, {}, {})

    def groups_of(self, principal: str) -> frozenset[str]:
        """Every group whose members match ``principal``."""
        return frozenset(
            name for name, members in self.groups.items() if members.matches(principal)
        )

    def roles_of(self, principal: str) -> frozenset[str]:
        """Every role ``principal`` holds through bindings, groups and inheritance."""
        if not self._wildcards:
            return self._literal.get(principal, _NO_ROLES)
        found = self._cache.get(principal)
        if found is not None:
            return found
        # Literal bindings come from the table, ``head*`` ones from one lookup per head
        # length; only the other globs are matched one by one.
        bound: set[str] = set()
        for length in self._prefix_lengths:
            if length > len(principal):
                break
            names = self._prefixed.get(principal[:length])
            if names is not None:
                bound.update(names)
        for globbed, matches in self._globbed:
            if matches(principal):
                bound.update(globbed)
        literal = self._literal.get(principal, _NO_ROLES)
        found = literal | self.expand_set(frozenset(bound)) if bound else literal
        with self._lock:
            if len(self._cache) >= _MAX_CACHED_PRINCIPALS:
                self._cache.clear()
            self._cache[principal] = found
        return found

    def forget(self) -> None:
        """Drop the memoized principals and role sets (benchmarks measure the cold path)."""
        with self._lock:
            self._cache.clear()
            self._expanded.clear()

    def expand(self, roles: Iterable[str]) -> frozenset[str]:
        """``roles`` plus everything they inherit (unknown roles stay as they are)."""
        out: set[str] = set()
        for role in roles:
            out |= self.closure.get(role, frozenset((role,)))
        return frozenset(out)

    def expand_set(self, roles: frozenset[str]) -> frozenset[str]:
        """:meth:`expand` for a role set sent with a request, memoized per distinct set."""
        found = self._expanded.get(roles)
        if found is None:
            found = self.expand(roles)
            with self._lock:
                if len(self._expanded) >= _MAX_CACHED_PRINCIPALS:
                    self._expanded.clear()
                self._expanded[roles] = found
        return found


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """Who may approve one risk level, how many must, and how long a request waits."""

    risk: RiskLevel
    roles: tuple[str, ...]
    quorum: int = 1
    ttl_s: float | None = None
    quorum_roles: tuple[tuple[str, int], ...] = ()


class ApprovalTable:
    """Approval rules by risk level; a level without its own rule uses the next one up."""

    def __init__(self, rules: Iterable[ApprovalRule]) -> None:
        self.rules = {rule.risk: rule for rule in rules}
        ordered = sorted(RiskLevel, key=lambda r: r.rank)
        self._effective: dict[RiskLevel, ApprovalRule | None] = {}
        for level in ordered:
            self._effective[level] = next(
                (self.rules[up] for up in ordered if up.rank >= level.rank and up in self.rules),
                None,
            )

    def for_risk(self, risk: RiskLevel) -> ApprovalRule | None:
        """The rule that governs approvals at ``risk``, or ``None`` if none is configured."""
        return self._effective[risk]


def authorize_approver(
    *,
    rbac: Rbac,
    table: ApprovalTable,
    approver: str,
    requester: str,
    risk: RiskLevel,
    decision: PolicyDecision,
    extra_roles: frozenset[str] = frozenset(),
) -> None:
    """Raise unless ``approver`` may approve ``requester``'s request at ``risk``.

    The roles allowed are the decision's ``approver_roles``, or, when it names none, the
    approval table's roles for ``risk``. With neither, LOW and MEDIUM requests may be
    approved by anyone else, and HIGH and CRITICAL by nobody (safe default).

    Raises:
        ApprovalError: ``approval.self_approval`` when approver and requester are the
            same principal; ``approval.not_authorized`` when the approver holds none of
            the allowed roles.
    """
    if approver == requester:
        raise ApprovalError(
            f"{approver} cannot approve their own request: nobody approves themselves",
            code=ErrorCode.APPROVAL_SELF_APPROVAL,
            approver=approver,
            requester=requester,
        )
    allowed: tuple[str, ...] = decision.approver_roles
    if not allowed:
        rule = table.for_risk(risk)
        allowed = rule.roles if rule is not None else ()
    if not allowed:
        if risk.at_least(RiskLevel.HIGH):
            raise ApprovalError(
                f"{approver} cannot approve a {risk.value} request: no approver roles are "
                f"configured for {risk.value} (add an 'approvals' entry to the policy)",
                code=ErrorCode.APPROVAL_NOT_AUTHORIZED,
                approver=approver,
                risk=risk.value,
            )
        return
    held = rbac.roles_of(approver) | rbac.expand(extra_roles)
    if held.isdisjoint(allowed):
        raise ApprovalError(
            f"{approver} cannot approve a {risk.value} request: it needs one of the roles "
            f"{list(allowed)}, and {approver} holds {sorted(held) or 'none'}",
            code=ErrorCode.APPROVAL_NOT_AUTHORIZED,
            approver=approver,
            risk=risk.value,
            allowed_roles=list(allowed),
        )


def _matching(voters: Sequence[frozenset[str]], slots: Sequence[str]) -> list[int | None]:
    """For each slot, the voter filling it in a maximum matching (Kuhn's augmenting paths)."""
    owner: list[int | None] = [None] * len(slots)

    def place(voter: int, seen: set[int]) -> bool:
        for slot, role in enumerate(slots):
            if role in voters[voter] and slot not in seen:
                seen.add(slot)
                holder = owner[slot]
                if holder is None or place(holder, seen):
                    owner[slot] = voter
                    return True
        return False

    for voter in range(len(voters)):
        place(voter, set())
    return owner


def missing_votes(
    voters: Sequence[frozenset[str]], quorum_roles: Sequence[tuple[str, int]], quorum: int
) -> dict[str, int]:
    """Votes still missing: per role of ``quorum_roles``, and ``"*"`` for the plain quorum.

    Each voter (their roles) counts once, for one role, so one principal holding both
    ``admin`` and ``security`` cannot meet ``{admin: 1, security: 1}`` alone. Empty when
    the request may be approved.
    """
    slots = [role for role, count in sorted(quorum_roles) for _ in range(count)]
    owner = _matching(voters, slots)
    missing: dict[str, int] = {}
    for slot, role in enumerate(slots):
        if owner[slot] is None:
            missing[role] = missing.get(role, 0) + 1
    if len(voters) < quorum:
        extra = quorum - len(voters) - sum(missing.values())
        if extra > 0:
            missing["*"] = extra
    return missing
