"""SQLite adapters over the project's state database (``.aifr/aifr.db``, WAL)."""

from aifr.storage.sqlite.database import Migration, SqliteDatabase, translate_sqlite_errors

__all__ = ["Migration", "SqliteDatabase", "translate_sqlite_errors"]
