"""``aifr db copy --to URL``: moving a project's state to another database, checked.

:func:`aifr.storage.state_copy.copy_state` moves the rows; this module decides whether
it may run and proves the result. It refuses while a worker is live on the source (what
it finished after the snapshot would be lost) or a process holds a run's lease (the run
would then be driven on both databases), when the source's audit chain does not
verify (the copy would carry a broken chain as if it were whole) and when ``--to`` is
the project's own database. After the copy both chains get one ``db.copied`` record
naming the two databases and the head copied, and the target's chain is verified.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aifr.app import App
from aifr.audit import AuditEvent
from aifr.errors import AuditError, ConfigError, ErrorCode, StorageError
from aifr.redaction import redact_url
from aifr.storage.postgres.database import PostgresDatabase
from aifr.storage.schema import upgrade_schema
from aifr.storage.state_copy import (
    CopyReport,
    StateDatabase,
    copy_state,
    require_empty,
    require_no_held_runs,
    state_counts,
)
from aifr.workflows.presence import known_workers

__all__ = ["StateCopy", "copy_project_state"]


@dataclass(frozen=True, slots=True)
class StateCopy:
    """A finished (or, with ``dry_run``, a planned) copy and how it was checked."""

    source: str
    target: str
    rows: dict[str, int]
    report: CopyReport | None
    verified: int | None

    def to_dict(self) -> dict[str, Any]:
        """The copy as JSON (URLs without their passwords)."""
        shown: dict[str, Any] = {
            "from": self.source,
            "to": self.target,
            "dry_run": self.report is None,
        }
        if self.report is None:
            return {**shown, "rows": dict(self.rows), "total": sum(self.rows.values())}
        return {**shown, **self.report.to_dict(), "verified_records": self.verified}


def copy_project_state(app: App, url: str, *, actor: str, dry_run: bool = False) -> StateCopy:
    """Copy ``app``'s state database into the empty database ``url``.

    Raises:
        ConfigError: ``url`` is no database URL, or the project's own database.
        StorageError: ``storage.in_use`` (a worker is live on the source, or a process
            is driving one of its runs),
            ``storage.not_empty`` (the target holds state), or a database failed.
        AuditError: ``audit.chain_broken``, the source's chain (nothing is copied), or
            the target's after the copy.
    """
    target_app = App(
        settings=app.settings.model_copy(update={"database_url": url}),
        registry=app.registry,
        policy=app.policy,
    )
    shown_source, shown_target = redact_url(app.settings.database_url), redact_url(url)
    try:
        source, target = app.database, target_app.database
        if _same(source, target):
            raise ConfigError(
                f"--to {shown_target} is this project's own database; name another one",
                key="database_url",
            )
        upgrade_schema(source)
        _refuse_live_workers(app)
        checked = app.ledger.verify()
        if not checked.ok:
            raise AuditError(
                f"the source's audit chain does not verify ({checked.message}); nothing was "
                "copied: 'aifr audit verify' shows where it breaks",
                code=ErrorCode.AUDIT_CHAIN_BROKEN,
                first_bad_seq=checked.first_bad_seq,
            )
        upgrade_schema(target)
        if dry_run:
            require_no_held_runs(source)
            require_empty(target)
            return StateCopy(shown_source, shown_target, state_counts(source), None, None)
        report = copy_state(source, target)
        event = AuditEvent(
            kind="db.copied",
            principal=actor,
            outcome="ok",
            details={
                "from": shown_source,
                "to": shown_target,
                "head_seq": report.head_seq,
                "head_hash": report.head_hash,
                "rows": dict(report.rows),
            },
        )
        target_app.ledger.append(event)
        app.ledger.append(event)
        copied = target_app.ledger.verify()
        if not copied.ok or copied.head_seq != report.head_seq + 1:
            raise AuditError(
                f"the copied audit chain does not verify ({copied.message}) in {shown_target}",
                code=ErrorCode.AUDIT_CHAIN_BROKEN,
            )
        return StateCopy(shown_source, shown_target, report.rows, report, copied.checked)
    finally:
        target_app.close()


def _same(source: StateDatabase, target: StateDatabase) -> bool:
    if isinstance(source, PostgresDatabase) or isinstance(target, PostgresDatabase):
        return (
            isinstance(source, PostgresDatabase)
            and isinstance(target, PostgresDatabase)
            and (source.dsn, source.schema) == (target.dsn, target.schema)
        )
    return Path(source.path).resolve() == Path(target.path).resolve()


def _refuse_live_workers(app: App) -> None:
    live = [
        worker.id
        for worker, state in known_workers(app.workers, app.settings.workflows.lease_ttl_s)
        if state == "live"
    ]
    if live:
        raise StorageError(
            f"{len(live)} worker(s) are live on this database ({', '.join(live)}); stop them "
            "first (and every server using it): what they do after the copy is read would "
            "not be in the copy",
            code=ErrorCode.STORAGE_IN_USE,
            workers=live,
        )
