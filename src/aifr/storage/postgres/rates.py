"""``PostgresRateStore``: per-key token buckets in PostgreSQL, shared by every API process.

The same scheme as :mod:`aifr.storage.sqlite.rates`: one row per key, refilled and
taken (one or a lease of several) by one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``; the row lock makes
concurrent spenders wait for each other, so the bucket is never overdrawn.
"""

from __future__ import annotations

import threading

from aifr.storage.postgres.database import PostgresDatabase, translate_pg_errors
from aifr.storage.rate_rows import take_outcome, take_params
from aifr.storage.sqlite.database import Migration

__all__ = ["PG_RATE_MIGRATIONS", "PostgresRateStore"]

PG_RATE_MIGRATIONS = [
    Migration(
        1,
        """
        CREATE TABLE rate_buckets (
            key TEXT PRIMARY KEY,
            tokens DOUBLE PRECISION NOT NULL,
            stamp DOUBLE PRECISION NOT NULL,
            granted DOUBLE PRECISION NOT NULL
        )
        """,
    )
]

_REFILL = (
    "LEAST(%(burst)s, rate_buckets.tokens + GREATEST(0.0, %(now)s - rate_buckets.stamp) * %(rate)s)"
)
_GRANT = f"LEAST(%(want)s, FLOOR({_REFILL}))"
_TAKE = f"""
INSERT INTO rate_buckets (key, tokens, stamp, granted)
VALUES (%(key)s, %(burst)s - LEAST(%(want)s, FLOOR(%(burst)s)), %(now)s,
        LEAST(%(want)s, FLOOR(%(burst)s)))
ON CONFLICT (key) DO UPDATE SET
    tokens = {_REFILL} - {_GRANT},
    stamp = GREATEST(rate_buckets.stamp, %(now)s),
    granted = {_GRANT}
RETURNING tokens, granted
"""  # noqa: S608  # constant SQL fragments, values are parameters


class PostgresRateStore:
    """Token buckets on PostgreSQL (component ``rates``)."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        self._ready = False
        self._lock = threading.Lock()

    def take(
        self, key: str, *, rate_per_s: float, burst: float, now: float, want: int = 1
    ) -> tuple[int, float]:
        """Take up to ``want`` whole tokens of ``key``'s bucket.

        Returns how many were taken and, when none was, the seconds until one is back.

        Raises:
            StorageError: the database failed.
        """
        if not self._ready:
            with self._lock:
                if not self._ready:
                    self.database.migrate("rates", PG_RATE_MIGRATIONS)
                    self._ready = True
        params = take_params(key, rate_per_s=rate_per_s, burst=burst, now=now, want=want)
        with translate_pg_errors("spending a rate token"), self.database.connection() as conn:
            row = conn.execute(_TAKE, params).fetchone()
        tokens, granted = row if row is not None else (0.0, 0.0)
        return take_outcome(tokens, granted, rate_per_s)
