"""Token-bucket rate limits per principal and capability.

A limit allows ``limit`` calls per ``per_s`` seconds with bursts up to ``burst``. Each
(limit, principal, capability id) pair has its own bucket, created full on first use.
The clock is injected so that tests and ``aifr policy test`` control time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from aifr.policy.rules import Match

__all__ = ["RateLimit", "RateLimiter"]

Clock = Callable[[], float]
_MAX_BUCKETS = 100_000


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A named limit: which requests it counts (``when``) and how many it lets through."""

    name: str
    when: Match
    limit: int
    per_s: float
    burst: int

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self.limit / self.per_s


class RateLimiter:
    """Buckets for a set of limits; thread-safe."""

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [tokens, last refill time]
        self._buckets: dict[tuple[str, str, str], list[float]] = {}

    def _refilled(self, limit: RateLimit, key: tuple[str, str, str], now: float) -> list[float]:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._drop_full(now)
            bucket = [float(limit.burst), now]
            self._buckets[key] = bucket
        else:
            elapsed = max(0.0, now - bucket[1])
            bucket[0] = min(float(limit.burst), bucket[0] + elapsed * limit.rate)
            bucket[1] = now
        return bucket

    def _drop_full(self, now: float) -> None:
        # Buckets that would be full again carry no state worth keeping.
        stale = [key for key, (_, last) in self._buckets.items() if now - last > 3600.0]
        for key in stale or list(self._buckets)[: _MAX_BUCKETS // 2]:
            del self._buckets[key]

    def acquire(self, limit: RateLimit, principal: str, capability_id: str) -> bool:
        """Take one token; False (and nothing taken) when the bucket is empty."""
        key = (limit.name, principal, capability_id)
        with self._lock:
            bucket = self._refilled(limit, key, self._clock())
            if bucket[0] >= 1.0:
                bucket[0] -= 1.0
                return True
            return False

    def tokens(self, limit: RateLimit, principal: str, capability_id: str) -> float:
        """Tokens left now, without taking any (for ``explain``)."""
        key = (limit.name, principal, capability_id)
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return float(limit.burst)
            elapsed = max(0.0, self._clock() - bucket[1])
            return min(float(limit.burst), bucket[0] + elapsed * limit.rate)
