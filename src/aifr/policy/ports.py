"""What the policy engine needs from storage: a place to keep grants."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from aifr.policy.grants import Grant

__all__ = ["GrantStore"]


class GrantStore(Protocol):
    """Stores grants; implemented in memory (policy) and on SQLite (storage)."""

    def add(self, grant: Grant) -> None:
        """Store a new grant; raises ``PolicyError`` if its id exists."""
        ...

    def get(self, grant_id: str) -> Grant | None:
        """The grant with this id, or ``None``."""
        ...

    def list(self, *, principal: str | None = None, active_at: float | None = None) -> list[Grant]:
        """Grants oldest first, optionally one principal's or only those active at a time."""
        ...

    def active_for(self, principal: str, now: float) -> Sequence[Grant]:
        """One principal's grants that are active at ``now`` (the decision hot path)."""
        ...

    def revoke(self, grant_id: str, *, revoked_by: str, at: float) -> Grant:
        """Revoke a grant; raises ``PolicyError`` (``policy.grant_not_found``) if unknown."""
        ...
