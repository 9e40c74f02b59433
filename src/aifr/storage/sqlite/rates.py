"""``SqliteRateStore``: per-key token buckets in the state database, shared by processes.

One row per key (an API token's digest): the tokens left and when they were counted.
:meth:`SqliteRateStore.take` refills and spends in one ``INSERT ... ON CONFLICT DO
UPDATE ... RETURNING`` inside ``BEGIN IMMEDIATE``, so two API processes on the same
database draw from one bucket and never both spend the last token.
"""

from __future__ import annotations

import threading

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
# never over the burst), then spend one token if a whole one is there.
_TAKE = """
INSERT INTO rate_buckets (key, tokens, stamp, granted) VALUES (:key, :burst - 1, :now, 1)
ON CONFLICT (key) DO UPDATE SET
    tokens = min(:burst, tokens + max(0.0, :now - stamp) * :rate)
        - (min(:burst, tokens + max(0.0, :now - stamp) * :rate) >= 1.0),
    stamp = max(stamp, :now),
    granted = (min(:burst, tokens + max(0.0, :now - stamp) * :rate) >= 1.0)
RETURNING tokens, granted
"""


class SqliteRateStore:
    """Token buckets on the project's SQLite database (component ``rates``)."""

    def __init__(self, database: SqliteDatabase) -> None:
        self.database = database
        self._ready = False
        self._lock = threading.Lock()

    def take(self, key: str, *, rate_per_s: float, burst: float, now: float) -> float:
        """Spend one token of ``key``'s bucket: ``0.0``, or the seconds until one is back.

        Raises:
            StorageError: the database failed.
        """
        if not self._ready:
            with self._lock:
                if not self._ready:
                    self.database.migrate("rates", RATE_MIGRATIONS)
                    self._ready = True
        conn = self.database.connect()
        params = {"key": key, "burst": float(burst), "now": now, "rate": rate_per_s}
        with translate_sqlite_errors("spending a rate token"), self.database.transaction(conn):
            tokens, granted = conn.execute(_TAKE, params).fetchone()
        return 0.0 if granted else (1.0 - float(tokens)) / rate_per_s
