"""Grants: time-limited permissions an approver issues after approving.

A grant says "``principal`` may call capabilities matching ``capability`` with inputs
satisfying ``constraints`` until ``expires_at``" and turns a REQUIRE_APPROVAL decision
into ALLOW. It never overrides DENY. Times are seconds since the epoch.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from pydantic import JsonValue

from aifr.errors import ErrorCode, PolicyError

__all__ = ["Grant", "InMemoryGrantStore", "new_grant_id"]


def new_grant_id() -> str:
    """A fresh, unguessable grant id (``g-`` and 24 hex digits)."""
    return "g-" + uuid.uuid4().hex[:24]


@dataclass(frozen=True, slots=True)
class Grant:
    """One grant; ``constraints`` uses the policy input-condition language."""

    id: str
    principal: str
    capability: str
    issued_by: str
    issued_at: float
    expires_at: float
    constraints: Mapping[str, JsonValue] = field(default_factory=dict)
    reason: str = ""
    revoked_at: float | None = None
    revoked_by: str | None = None

    def is_active(self, now: float) -> bool:
        """Not revoked and not yet expired at ``now``."""
        return self.revoked_at is None and now < self.expires_at

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON form (for ``aifr grants list --json`` and audit details)."""
        return {
            "id": self.id,
            "principal": self.principal,
            "capability": self.capability,
            "constraints": dict(self.constraints),
            "issued_by": self.issued_by,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "reason": self.reason,
            "revoked_at": self.revoked_at,
            "revoked_by": self.revoked_by,
        }


def grant_not_found(grant_id: str) -> PolicyError:
    """The error raised when a grant id is unknown."""
    return PolicyError(
        f"no grant with id {grant_id!r}",
        code=ErrorCode.POLICY_GRANT_NOT_FOUND,
        grant_id=grant_id,
    )


class InMemoryGrantStore:
    """A :class:`~aifr.policy.ports.GrantStore` held in memory (tests, ``policy test``)."""

    def __init__(self, grants: Sequence[Grant] = ()) -> None:
        self._lock = threading.Lock()
        self._grants: dict[str, Grant] = {g.id: g for g in grants}
        self._version = 0

    @property
    def version(self) -> int:
        """Changes whenever a grant is added or revoked."""
        return self._version

    def add(self, grant: Grant) -> None:
        """Store a new grant.

        Raises:
            PolicyError: a grant with the same id exists.
        """
        with self._lock:
            if grant.id in self._grants:
                raise PolicyError(f"grant {grant.id!r} already exists", grant_id=grant.id)
            self._grants[grant.id] = grant
            self._version += 1

    def get(self, grant_id: str) -> Grant | None:
        """The grant with this id, or ``None``."""
        return self._grants.get(grant_id)

    def list(self, *, principal: str | None = None, active_at: float | None = None) -> list[Grant]:
        """Grants, oldest first; only ``principal``'s, only those active at ``active_at``."""
        with self._lock:
            grants = list(self._grants.values())
        return sorted(
            (
                g
                for g in grants
                if (principal is None or g.principal == principal)
                and (active_at is None or g.is_active(active_at))
            ),
            key=lambda g: (g.issued_at, g.id),
        )

    def active_for(self, principal: str, now: float) -> Sequence[Grant]:
        """``principal``'s grants active at ``now``."""
        with self._lock:
            return [
                g for g in self._grants.values() if g.principal == principal and g.is_active(now)
            ]

    def revoke(self, grant_id: str, *, revoked_by: str, at: float) -> Grant:
        """Revoke a grant (revoking twice keeps the first revocation).

        Raises:
            PolicyError: ``policy.grant_not_found`` for an unknown id.
        """
        with self._lock:
            grant = self._grants.get(grant_id)
            if grant is None:
                raise grant_not_found(grant_id)
            if grant.revoked_at is None:
                grant = replace(grant, revoked_at=at, revoked_by=revoked_by)
                self._grants[grant_id] = grant
                self._version += 1
            return grant
