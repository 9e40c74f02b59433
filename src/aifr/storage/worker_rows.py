"""The worker registry's statements, written once for both backends.

SQLite and PostgreSQL keep workers in the same ``wf_workers`` table (workflows
migration 5) and take the same SQL; only the parameter mark differs (``?`` or ``%s``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from aifr.workflows.ports import WorkerInfo

__all__ = [
    "FORGET_AFTER_S",
    "WorkerStatements",
    "statements",
    "worker_from_row",
    "worker_params",
    "workers_table",
]

FORGET_AFTER_S: Final = 86_400.0
"""A worker unseen this long is dropped from the registry when another one starts: it
was killed or cut off long ago, and its runs were taken over when its leases expired."""


def workers_table(real: str) -> str:
    """Workflows migration 5: the ``wf_workers`` table, ``real`` the backend's float type."""
    return f"""
        CREATE TABLE wf_workers (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            concurrency INTEGER NOT NULL,
            version TEXT NOT NULL,
            started_at {real} NOT NULL,
            seen_at {real} NOT NULL
        )
        """


@dataclass(frozen=True, slots=True)
class WorkerStatements:
    """The registry's SQL with one backend's parameter mark."""

    announce: str
    forget: str
    seen: str
    leave: str
    workers: str
    live_on: str


_SQLITE = WorkerStatements(
    announce=(
        "INSERT INTO wf_workers (id, host, pid, concurrency, version, started_at, seen_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at"
    ),
    forget="DELETE FROM wf_workers WHERE seen_at < ?",
    seen="UPDATE wf_workers SET seen_at = ? WHERE id = ?",
    leave="DELETE FROM wf_workers WHERE id = ?",
    workers=(
        "SELECT id, host, pid, concurrency, version, started_at, seen_at, "
        "(SELECT COUNT(*) FROM wf_runs r WHERE substr(r.lease_owner, 1, "
        "length(w.host || ':' || w.pid || ':')) = w.host || ':' || w.pid || ':' "
        "AND r.lease_expires_at > ?) FROM wf_workers w ORDER BY started_at DESC, id"
    ),
    live_on="SELECT COUNT(*) FROM wf_workers WHERE host = ? AND seen_at >= ?",
)


def statements(mark: str) -> WorkerStatements:
    """The statements with ``mark`` (``?`` or ``%s``) as the parameter placeholder."""
    return WorkerStatements(
        *(getattr(_SQLITE, name).replace("?", mark) for name in WorkerStatements.__slots__)
    )


def worker_params(worker: WorkerInfo) -> tuple[Any, ...]:
    """The announce statement's parameters."""
    return (
        worker.id,
        worker.host,
        worker.pid,
        worker.concurrency,
        worker.version,
        worker.started_at,
        worker.seen_at,
    )


def worker_from_row(row: Sequence[Any]) -> WorkerInfo:
    """A ``workers`` row as a :class:`WorkerInfo`."""
    return WorkerInfo(
        id=str(row[0]),
        host=str(row[1]),
        pid=int(row[2]),
        concurrency=int(row[3]),
        version=str(row[4]),
        started_at=float(row[5]),
        seen_at=float(row[6]),
        runs=int(row[7]),
    )
