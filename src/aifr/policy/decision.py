"""The request a policy judges and the answer it gives (DESIGN.md part B).

Both are slotted frozen dataclasses: the engine answers in microseconds, and a decision
may be shared between calls because nothing can change it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aifr.capabilities import CapabilitySpec
from aifr.frozen import fast_init

__all__ = ["Decision", "PolicyDecision", "PolicyRequest"]


class Decision(StrEnum):
    """What the gatekeeper answers; it never changes the request."""

    ALLOW = "ALLOW"
    DENY = "DENY"
    REQUIRE_APPROVAL = "REQUIRE_APPROVAL"

    @property
    def severity(self) -> int:
        """How restrictive the answer is: ALLOW 0, REQUIRE_APPROVAL 1, DENY 2."""
        return _SEVERITY[self]


_SEVERITY = {Decision.ALLOW: 0, Decision.REQUIRE_APPROVAL: 1, Decision.DENY: 2}


@fast_init
@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """May ``principal`` (with ``roles``) invoke ``capability`` with ``inputs``?

    ``on_behalf_of`` is the delegation chain, nearest delegator first and the original
    human last: an agent acting for a user through another agent sends
    ``("agent-b", "alice")``. ``secrets`` are denied unless a policy ``secrets`` entry
    grants each one to the principal and to every link of the chain.
    """

    principal: str
    capability: CapabilitySpec
    inputs: Mapping[str, Any]
    roles: frozenset[str] = frozenset()
    workflow_id: str | None = None
    on_behalf_of: tuple[str, ...] = ()
    secrets: frozenset[str] = frozenset()
    """Names of the ``secret://`` references the inputs carry (each needs a grant)."""


def _sorted_roles(roles: Iterable[str]) -> tuple[str, ...]:
    return roles if isinstance(roles, tuple) else tuple(sorted(roles))


@fast_init
@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """The engine's answer: the decision, the rule that made it and why.

    For REQUIRE_APPROVAL, ``approver_roles`` says who may approve (a principal holding
    any of them), ``quorum`` how many distinct approvers are needed, and
    ``approval_ttl_s`` how long the approval request lives (``None``: the configured
    default). ``grant_id`` names the grant that turned REQUIRE_APPROVAL into ALLOW.
    """

    decision: Decision
    rule_id: str | None
    reason: str
    approver_roles: tuple[str, ...] = ()
    quorum: int = 1
    approval_ttl_s: float | None = None
    grant_id: str | None = None
    quorum_roles: tuple[tuple[str, int], ...] = ()
    """Separation of duties: how many approvers of each role (``(("admin", 1),)``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.approver_roles, tuple):
            # Callers rebuilding a decision from storage may pass a set; keep one order.
            object.__setattr__(self, "approver_roles", _sorted_roles(self.approver_roles))

    @property
    def allowed(self) -> bool:
        """True when the request may run now, without an approval."""
        return self.decision is Decision.ALLOW
