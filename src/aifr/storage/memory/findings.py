"""``InMemoryFindingStore`` and ``InMemoryResourceRegistry``: the findings ports in a dict.

For tests and one-shot conversions (parse, dedupe, export without a project). It keeps
the same rules as the SQL stores and passes the same contract suite: findings are
deduplicated by id (derived from project and fingerprint), pages follow insertion
order, and a batch is all or nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aifr.errors import FindingsError
from aifr.findings.models import Finding, Project, Resource, Run, TriageState
from aifr.findings.ports import (
    FINDINGS_SCHEMA_VERSION,
    FindingFilter,
    FindingPage,
    SaveCounts,
    TriageChange,
)
from aifr.findings.records import ParsedFinding
from aifr.storage.atomic import write_atomically
from aifr.storage.findings_rows import (
    decode_cursor,
    encode_cursor,
    finding_from_row,
    parsed_row,
    stamp,
    unknown_finding,
    unknown_project,
)

__all__ = ["InMemoryFindingStore", "InMemoryResourceRegistry"]


@dataclass
class _Stored:
    seq: int
    finding: Finding
    runs: set[str] = field(default_factory=set)


class InMemoryFindingStore:
    """The findings :class:`~aifr.findings.ports.StoragePort` held in memory (one lock)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._projects: dict[str, Project] = {}
        self._runs: dict[tuple[str, str], Run] = {}
        self._findings: dict[str, _Stored] = {}
        self._history: dict[str, list[TriageChange]] = {}
        self._resources: dict[tuple[str, str], Resource] = {}
        self._seq = 0

    def atomic_write(self, path: Path, chunks: Iterable[bytes]) -> int:
        """Write ``chunks`` to ``path`` atomically (temporary file, fsync, rename)."""
        return write_atomically(path, chunks)

    def validate_store_layout(self) -> list[str]:
        """Always sound: there are no tables to lose."""
        return []

    def get_schema_version(self) -> int:
        """The version this code writes (memory never holds an older one)."""
        return FINDINGS_SCHEMA_VERSION

    def migrate_store(self) -> int:
        """Nothing to migrate."""
        return FINDINGS_SCHEMA_VERSION

    def save_project(self, project: Project) -> Project:
        """Create ``project`` unless its id exists; return the stored one."""
        with self._lock:
            return self._projects.setdefault(project.id, project)

    def get_project(self, project_id: str) -> Project | None:
        """The project with this id, or ``None``."""
        return self._projects.get(project_id)

    def list_projects(self) -> list[Project]:
        """Every project, by id."""
        with self._lock:
            return [self._projects[k] for k in sorted(self._projects)]

    def save_run(self, run: Run) -> None:
        """Insert ``run``, or update its ``finished_at``."""
        with self._lock:
            if run.project_id not in self._projects:
                raise unknown_project(run.project_id)
            key = (run.project_id, run.id)
            earlier = self._runs.get(key)
            self._runs[key] = (
                earlier.model_copy(
                    update={
                        "finished_at": run.finished_at,
                        "scanner": run.scanner or earlier.scanner,
                    }
                )
                if earlier
                else run
            )

    def list_runs(self, project_id: str) -> list[Run]:
        """A project's runs, oldest first."""
        with self._lock:
            runs = [r for (p, _), r in self._runs.items() if p == project_id]
        return sorted(runs, key=lambda r: (r.started_at, r.id))

    def _merge(self, pending: dict[str, _Stored], finding: Finding) -> bool:
        if (finding.project_id, finding.last_run_id) not in self._runs or (
            finding.project_id,
            finding.run_id,
        ) not in self._runs:
            raise FindingsError(
                f"run {finding.last_run_id!r} is not a run of project {finding.project_id!r}; "
                "save the run first",
                run_id=finding.last_run_id,
                project_id=finding.project_id,
            )
        known = pending.get(finding.id) or self._findings.get(finding.id)
        if known is None:
            self._seq += 1
            pending[finding.id] = _Stored(self._seq, finding, {finding.last_run_id})
            return True
        old = known.finding
        merged = old.model_copy(
            update={
                "last_run_id": finding.last_run_id,
                "last_seen": max(old.last_seen, finding.last_seen),
                "occurrences": old.occurrences + finding.occurrences,
                "resource_id": old.resource_id or finding.resource_id,
            }
        )
        pending[finding.id] = _Stored(known.seq, merged, {*known.runs, finding.last_run_id})
        return False

    def save_findings(self, findings: Iterable[Finding]) -> SaveCounts:
        """Store many findings, all or none."""
        with self._lock:
            pending: dict[str, _Stored] = {}
            seq = self._seq
            new = total = 0
            try:
                for finding in findings:
                    total += 1
                    new += self._merge(pending, finding)
            except BaseException:
                self._seq = seq
                raise
            self._findings.update(pending)
        return SaveCounts(new=new, duplicates=total - new)

    def save_finding(self, finding: Finding) -> bool:
        """Store one finding; ``True`` when its fingerprint is new in its project."""
        return self.save_findings([finding]).new == 1

    def save_parsed(
        self,
        records: Iterable[tuple[ParsedFinding, str | None]],
        *,
        project_id: str,
        run_id: str,
        seen_at: datetime,
    ) -> SaveCounts:
        """Store parser records as findings first seen in ``run_id``."""
        seen = stamp(seen_at)  # the SQL stores' row, so every adapter keeps the same values
        return self.save_findings(
            finding_from_row(parsed_row(p, r, project_id, run_id, seen)) for p, r in records
        )

    def get_finding(self, project_id: str, finding_id: str) -> Finding | None:
        """One finding of a project by id, or ``None``."""
        stored = self._findings.get(finding_id)
        return stored.finding if stored and stored.finding.project_id == project_id else None

    def list_findings(
        self, where: FindingFilter, *, limit: int = 100, cursor: str | None = None
    ) -> FindingPage:
        """One page of findings matching ``where``, oldest first."""
        after = decode_cursor(cursor)
        with self._lock:
            ordered = sorted(self._findings.values(), key=lambda s: s.seq)
        matching = [s for s in ordered if s.seq > after and _matches(s, where)]
        page = matching[:limit]
        more = len(matching) > limit and bool(page)
        return FindingPage(
            findings=[s.finding for s in page],
            next_cursor=encode_cursor(page[-1].seq) if more else None,
        )

    def triage_finding(
        self, project_id: str, finding_id: str, state: TriageState, *, actor: str, reason: str = ""
    ) -> TriageChange:
        """Set the triage state and append the change to the history."""
        with self._lock:
            stored = self._findings.get(finding_id)
            if stored is None or stored.finding.project_id != project_id:
                raise unknown_finding(project_id, finding_id)
            change = TriageChange(
                finding_id, stored.finding.triage_state, state, actor, datetime.now(UTC), reason
            )
            stored.finding = stored.finding.model_copy(update={"triage_state": state})
            self._history.setdefault(finding_id, []).append(change)
        return change

    def list_triage_history(self, project_id: str, finding_id: str) -> list[TriageChange]:
        """A finding's triage changes, oldest first."""
        if self.get_finding(project_id, finding_id) is None:
            return []
        return list(self._history.get(finding_id, []))

    def delete_project(self, project_id: str) -> bool:
        """Delete a project and everything in it."""
        with self._lock:
            if self._projects.pop(project_id, None) is None:
                return False
            for key in [k for k, s in self._findings.items() if s.finding.project_id == project_id]:
                del self._findings[key]
                self._history.pop(key, None)
            for run_key in [k for k in self._runs if k[0] == project_id]:
                del self._runs[run_key]
            for resource_key in [k for k in self._resources if k[0] == project_id]:
                del self._resources[resource_key]
            return True

    def close(self) -> None:
        """Nothing to release."""


def _matches(stored: _Stored, where: FindingFilter) -> bool:
    finding = stored.finding
    return (
        finding.project_id == where.project_id
        and (where.run_id is None or where.run_id in stored.runs)
        and (not where.severities or finding.severity in where.severities)
        and (where.scanner is None or finding.scanner == where.scanner)
        and (where.triage_state is None or finding.triage_state is where.triage_state)
        and (where.resource_id is None or finding.resource_id == where.resource_id)
    )


class InMemoryResourceRegistry:
    """The :class:`~aifr.findings.ports.ResourceRegistry` beside an in-memory store."""

    def __init__(self, store: InMemoryFindingStore) -> None:
        self._store = store

    def add_resource(self, resource: Resource) -> Resource:
        """Register ``resource``, or return the one of the same kind and value."""
        store = self._store
        with store._lock:
            if resource.project_id not in store._projects:
                raise unknown_project(resource.project_id)
            for existing in store._resources.values():
                if (existing.project_id, existing.kind, existing.value) == (
                    resource.project_id,
                    resource.kind,
                    resource.value,
                ):
                    return existing
            store._resources[(resource.project_id, resource.id)] = resource
        return resource

    def get_resource(self, project_id: str, resource_id: str) -> Resource | None:
        """One resource of a project, or ``None``."""
        return self._store._resources.get((project_id, resource_id))

    def list_resources(self, project_id: str) -> list[Resource]:
        """A project's resources, oldest first."""
        with self._store._lock:
            mine = [r for (p, _), r in self._store._resources.items() if p == project_id]
        return sorted(mine, key=lambda r: (r.created_at, r.id))

    def remove_resource(self, project_id: str, resource_id: str) -> bool:
        """Forget a resource and unlink the findings that pointed to it."""
        store = self._store
        with store._lock:
            if store._resources.pop((project_id, resource_id), None) is None:
                return False
            for stored in store._findings.values():
                if stored.finding.resource_id == resource_id:
                    stored.finding = stored.finding.model_copy(update={"resource_id": None})
            return True
