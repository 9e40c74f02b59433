"""The ManifestEmitter: what changed since the last ingest, decided by stat first, hash second.

The index's manifest (:meth:`ChunkIndex.files`) remembers each file's content hash and
the ``size`` and ``mtime_ns`` it had when read. A file whose ``stat`` matches is
unchanged without being opened; only one whose ``stat`` moved is hashed, and if its
hash still matches it is unchanged too (its new ``stat`` is recorded, so the next
ingest takes the fast path). An archive whose ``stat`` matches keeps all its members.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aifr.ingest.archives import ARCHIVE_SEPARATOR, is_archive
from aifr.ingest.enumerate import WorkspaceFile
from aifr.ingest.ports import FileEntry

__all__ = ["IngestCounts", "ManifestEmitter", "ManifestPlan", "file_digest"]

_HASH_BLOCK = 1024 * 1024


@dataclass(slots=True)
class IngestCounts:
    """Files added, changed, removed and unchanged by one ingest."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0


@dataclass(slots=True)
class ManifestPlan:
    """The fast-path verdicts: unchanged by ``stat``, and what must be looked at."""

    unchanged: list[str] = field(default_factory=list)
    candidates: list[WorkspaceFile] = field(default_factory=list)
    archives: list[WorkspaceFile] = field(default_factory=list)


def file_digest(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class ManifestEmitter:
    """Compares a workspace with the manifest of one repository and emits new entries."""

    def __init__(self, repo: str) -> None:
        self.repo = repo

    def plan(
        self, previous: Mapping[str, FileEntry], files: Sequence[WorkspaceFile]
    ) -> ManifestPlan:
        """Split ``files`` into unchanged (by ``stat``), candidates and archives to open."""
        members: dict[str, list[str]] = {}
        for path in previous:
            head, sep, _ = path.partition(ARCHIVE_SEPARATOR)
            if sep:
                members.setdefault(head, []).append(path)
        plan = ManifestPlan()
        for item in files:
            known = previous.get(item.path)
            same = known is not None and known.size == item.size and known.mtime_ns == item.mtime_ns
            if same:
                plan.unchanged.append(item.path)
                plan.unchanged.extend(members.get(item.path, ()))
            elif is_archive(item.path):
                plan.archives.append(item)
            else:
                plan.candidates.append(item)
        return plan

    def entry(self, item: WorkspaceFile, content_hash: str) -> FileEntry:
        """The manifest entry of a file read now."""
        return FileEntry(self.repo, item.path, content_hash, item.size, item.mtime_ns)

    @staticmethod
    def is_new(previous: Mapping[str, FileEntry], path: str) -> bool:
        """Whether ``path`` was not in the manifest (added rather than changed)."""
        return path not in previous

    @staticmethod
    def vanished(previous: Mapping[str, FileEntry], seen: Iterable[str]) -> list[str]:
        """Paths of the manifest the workspace no longer holds (or no longer ingests)."""
        return sorted(set(previous).difference(seen))
