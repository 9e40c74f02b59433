"""What the SQLite and PostgreSQL rate stores share: a take's parameters and its answer.

Each adapter keeps its own dialect of the one ``INSERT ... ON CONFLICT DO UPDATE ...
RETURNING`` statement (refill by the elapsed time, never over the burst, then grant up
to ``want`` whole tokens); the arithmetic around it is the same and lives here.
"""

from __future__ import annotations

__all__ = ["take_outcome", "take_params"]


def take_params(
    key: str, *, rate_per_s: float, burst: float, now: float, want: int
) -> dict[str, str | float]:
    """The named parameters of one take (at least one token is asked for)."""
    return {
        "key": key,
        "burst": float(burst),
        "now": now,
        "rate": rate_per_s,
        "want": float(max(1, want)),
    }


def take_outcome(tokens: float, granted: float, rate_per_s: float) -> tuple[int, float]:
    """How many tokens were taken and, when none was, the seconds until one is back."""
    taken = int(granted)
    return taken, 0.0 if taken else (1.0 - float(tokens)) / rate_per_s
