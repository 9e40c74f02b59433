"""How long a worker pauses while its database keeps failing: doubling, capped, jittered.

Shared by the worker's loop (between failed turns) and its start-up (between failed
attempts to register, see :class:`~aifr.workflows.presence.Presence`), so a worker backs
off the same way whatever it was doing when the database went away.
"""

from __future__ import annotations

import random

__all__ = ["MAX_BACKOFF_S", "backoff_s"]

MAX_BACKOFF_S = 10.0
"""Longest pause between turns while the database keeps failing."""


def backoff_s(poll_s: float, failures: int) -> float:
    """Extra pause after ``failures`` failed turns in a row: doubling, capped, jittered."""
    base = min(MAX_BACKOFF_S, poll_s * float(2 ** min(failures, 16)))
    return base * (0.5 + random.random() / 2)  # noqa: S311  # jitter, not a secret
