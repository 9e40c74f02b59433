"""Importing scanner output into a store: parse as a stream, link to resources, save in batches.

Memory stays flat whatever the file size: records are parsed one at a time, saved in
batches (one transaction each, its rows streamed into the store's upsert), and only the
first :data:`MAX_SKIPPED_SHOWN` skipped lines are kept for the summary (all are
counted). A batch is handed to the store as a stream that parses as the store reads it
(``StoragePort.save_parsed``), so not even one batch of records is held: the SQLite
store turns each record into its row inside the transaction. The run is saved before
the first batch and marked finished after the last, so an interrupted import leaves a
run without ``finished_at`` and every batch saved so far; importing the same file again
only adds occurrences.

A batch ends at ``batch_size`` findings or when it has been read for ``batch_seconds``,
whichever comes first. The store holds its write lock while it reads a batch, so the time
budget is what bounds how long other writers of the same database (workflows, the audit
ledger) wait, on a fast host or a loaded one; the count bounds the work one rollback
throws away. Larger transactions make the import cheaper (each commit rewrites the
pages of the id index that the batch touched, and random ids touch most of them), so the
defaults take as many findings as fit in :data:`BATCH_SECONDS`. Progress is reported
apart from batches, every :data:`PROGRESS_EVERY` findings read (``on_progress``), so a
progress bar moves smoothly whatever the batch size.

CPython's cyclic garbage collector is paused while an import runs (:func:`_gc_paused`):
the records hold no reference cycles, so reference counting frees them, and the
collector's passes over the batch in memory cost more than the parsing itself (half the
parse time on a large file). The collector comes back when the last running import ends.
"""

from __future__ import annotations

import contextlib
import gc
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Final

from pydantic import JsonValue

from aifr.findings.models import Project, Resource, Run
from aifr.findings.parsers import parse_findings
from aifr.findings.ports import ResourceRegistry, StoragePort
from aifr.findings.records import ParsedFinding, ParseProblem
from aifr.findings.resources import Target, check_ident, match_resource

__all__ = [
    "BATCH_SECONDS",
    "DEFAULT_BATCH",
    "IMPORT_PROGRESS",
    "MAX_SKIPPED_SHOWN",
    "PROGRESS_EVERY",
    "ImportSummary",
    "SkippedLine",
    "import_findings",
    "new_run_id",
]

MAX_SKIPPED_SHOWN: Final = 1000
IMPORT_PROGRESS: ContextVar[Callable[[int, int], None] | None] = ContextVar(
    "aifr_import_progress", default=None
)
"""Who watches a file import (the CLI's progress bar): called with bytes read and the size.

Set by the caller around ``Runtime.invoke("findings.import", ...)``; the runtime copies
the caller's context into the handler's thread, so the handler reports to it every
:data:`PROGRESS_EVERY` findings read. It is not an input: it changes nothing the policy
or the audit sees.
"""
DEFAULT_BATCH: Final = 50_000
"""The most findings saved in one transaction (one rollback loses at most this many)."""
BATCH_SECONDS: Final = 0.5
"""How long one batch is read, at most, before it commits: the write lock's hold time.

Measured: a 1,000,000-line Nuclei file takes ~0.2 s per 10,000 findings on a quiet host,
so a batch holds the write lock about half a second (plus its commit), and on a loaded
host it is cut shorter, never held longer.
"""
PROGRESS_EVERY: Final = 5_000
"""Findings read between two ``on_progress`` calls."""
_CLOCK_EVERY: Final = 256  # findings read between two looks at the clock (a look costs ~50 ns)


@dataclass(frozen=True, slots=True)
class SkippedLine:
    """A line that became no finding: why, and whether it was malformed or just not a finding."""

    line: int
    reason: str
    malformed: bool


@dataclass(slots=True)
class ImportSummary:
    """What an import did: findings new and repeated, and the lines skipped with reasons."""

    project_id: str
    run_id: str
    scanner: str | None = None
    findings: int = 0
    imported: int = 0
    duplicates: int = 0
    linked: int = 0
    skipped_count: int = 0
    skipped: list[SkippedLine] = field(default_factory=list)

    def to_json(self) -> dict[str, JsonValue]:
        """The summary as a JSON object (the CLI's ``--json`` and the scanners' output)."""
        return {
            "project": self.project_id,
            "run": self.run_id,
            "scanner": self.scanner,
            "findings": self.findings,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "linked_to_resources": self.linked,
            "skipped": self.skipped_count,
            "skipped_lines": [
                {"line": s.line, "reason": s.reason, "malformed": s.malformed} for s in self.skipped
            ],
        }


_gc_lock = threading.Lock()
_gc_holders = 0
_gc_was_enabled = False


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic collector while the block runs; the last one out restores it."""
    global _gc_holders, _gc_was_enabled  # one process-wide collector
    with _gc_lock:
        if _gc_holders == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_holders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_was_enabled:
                gc.enable()


def new_run_id(now: datetime | None = None) -> str:
    """A fresh run id that sorts by time: ``run-20260102T030405-1a2b3c``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"run-{moment:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


class _Linker:
    """Finds each record's resource (used only when the project registered some)."""

    def __init__(self, resources: list[Resource]) -> None:
        self._resources = resources

    def __call__(self, parsed: ParsedFinding) -> str | None:
        found = match_resource(self._resources, Target(parsed.url, parsed.host, parsed.ip))
        return found.id if found is not None else None


def _first_scanner(
    records: Iterator[tuple[ParsedFinding, str | None]], summary: ImportSummary
) -> Iterator[tuple[ParsedFinding, str | None]]:
    """``records`` as they are, noting the scanner of the import's first finding."""
    if summary.scanner is None:
        first = next(records, None)
        if first is None:
            return
        summary.scanner = first[0].scanner
        yield first
    yield from records


def import_findings(
    store: StoragePort,
    registry: ResourceRegistry,
    stream: IO[bytes],
    *,
    project_id: str,
    run_id: str | None = None,
    scanner: str = "auto",
    source: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    batch_seconds: float = BATCH_SECONDS,
    on_batch: Callable[[ImportSummary], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Parse ``stream`` and save its findings into ``project_id`` as run ``run_id``.

    The project is created when missing; a new run id is made when none is given.
    A batch ends after ``batch_size`` findings or once it has been read for
    ``batch_seconds`` (the clock is read every 256 findings), whichever comes first.
    ``on_batch`` is called after each saved batch, with the counts so far;
    ``on_progress`` every :data:`PROGRESS_EVERY` findings read, with how many were read
    (inside the batch's transaction: a progress bar reads the stream's position then).

    Raises:
        FindingsError: an unknown scanner name, unreadable input, or a project or run
            id that does not fit the id pattern (nothing is written then).
        StorageError: the store failed (the batches saved before stay saved).
    """
    check_ident("project", project_id)
    if run_id is not None:
        check_ident("run", run_id)
    events = parse_findings(stream, scanner)  # an unknown scanner name fails before any write
    started = datetime.now(UTC)
    store.save_project(Project(id=project_id, name=project_id, created_at=started))
    run = Run(
        id=run_id or new_run_id(started),
        project_id=project_id,
        scanner=None if scanner == "auto" else scanner,
        source=source,
        started_at=started,
    )
    store.save_run(run)
    summary = ImportSummary(project_id=project_id, run_id=run.id)
    resources = list(registry.list_resources(project_id))
    link = _Linker(resources) if resources else None
    pending = iter(events)
    ended = False
    taken = 0
    read = 0

    def findings() -> Iterator[tuple[ParsedFinding, str | None]]:
        """The next batch of findings, read as the store saves them; skips counted."""
        nonlocal ended, taken, read
        taken = 0
        deadline = time.monotonic() + batch_seconds
        for event in pending:
            if isinstance(event, ParsedFinding):
                taken += 1
                if link is None:
                    yield event, None
                else:
                    resource_id = link(event)
                    summary.linked += resource_id is not None
                    yield event, resource_id
                read += 1
                if on_progress is not None and read % PROGRESS_EVERY == 0:
                    on_progress(read)
                if taken >= batch_size or (
                    taken % _CLOCK_EVERY == 0 and time.monotonic() >= deadline
                ):
                    return
                continue
            summary.skipped_count += 1
            if len(summary.skipped) < MAX_SKIPPED_SHOWN:
                malformed = isinstance(event, ParseProblem)
                summary.skipped.append(SkippedLine(event.line, event.reason, malformed))
        ended = True

    with _gc_paused():
        while not ended:
            # One batch: the store reads it from the parser record by record, in one
            # transaction, so no batch of records is held in memory.
            counts = store.save_parsed(
                _first_scanner(findings(), summary),
                project_id=project_id,
                run_id=run.id,
                seen_at=started,
            )
            if not taken:
                continue
            summary.findings += taken
            summary.imported += counts.new
            summary.duplicates += counts.duplicates
            if on_batch is not None:
                on_batch(summary)
    store.save_run(
        run.model_copy(update={"scanner": summary.scanner, "finished_at": datetime.now(UTC)})
    )
    return summary
