"""``SqliteRateStore``: per-key token buckets in the state database, shared by processes.

One row per key (an API token's digest): the tokens left and when they were counted.
:meth:`SqliteRateStore.take` refills and spends in one ``INSERT ... ON CONFLICT DO
UPDATE ... RETURNING`` inside ``BEGIN IMMEDIATE``, so two API processes on the same
database draw from one bucket and never both spend the last token.
"""

from __future__ import annotations

import threading

from aifr.storage.rate_rows import take_outcome, take_params
from aifr.storage.sqlite.database import Migration, SqliteDatabase, translate_sqlite_errors

__all__ = ["RATE_MIGRATIONS", "SqliteRateStore"]

RATE_MIGRATIONS = [
    Migration(
        1,
        """
        CREATE TABLE rate_buckets (
            key TEXT PRIMARY KEY,
            tokens REAL NOT NULL,
            stamp REAL NOT NULL,
            granted INTEGER NOT NULL
        );
        """,
    )
]

# SET expressions see the row as it was: refill by the elapsed time (never backwards,
# never over the burst), then take as many whole tokens as are there, up to :want.
_REFILL = "min(:burst, tokens + max(0.0, :now - stamp) * :rate)"
_GRANT = f"min(:want, CAST({_REFILL} AS INTEGER))"
_TAKE = f"""
INSERT INTO rate_buckets (key, tokens, stamp, granted)
VALUES (:key, :burst - min(:want, CAST(:burst AS INTEGER)), :now, min(:want, CAST(:burst AS INTEGER)))
ON CONFLICT (key) DO UPDATE SET
    tokens = {_REFILL} - {_GRANT},
    stamp = max(stamp, :now),
    granted = {_GRANT}
RETURNING tokens, granted
"""  # noqa: S608  # constant SQL fragments, values are parameters


class SqliteRateStore:
    """Token buckets on the project's SQLite database (component ``rates``)."""

    def __init__(self, database: SqliteDatabase) -> None:
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
                    self.database.migrate("rates", RATE_MIGRATIONS)
                    self._ready = True
        conn = self.database.connect()
        params = take_params(key, rate_per_s=rate_per_s, burst=burst, now=now, want=want)
        with translate_sqlite_errors("spending a rate token"), self.database.transaction(conn):
            tokens, granted = conn.execute(_TAKE, params).fetchone()
        return take_outcome(tokens, granted, rate_per_s)
