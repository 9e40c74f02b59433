"""The IngestPipeline: enumerate, open archives, sanitize, plan, embed in batches, store.

Order matters for safety and for crashes. Text is sanitized inside the worker, before
a chunk exists, so no secret reaches the embedder, the index, a log line or the report.
A file's chunks replace its old ones in one :meth:`ChunkIndex.replace_file` call after
its vectors exist, and an archive's own entry is written after its members, so an ingest
stopped half way is finished by the next one rather than left looking complete.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from aifr.errors import IngestError
from aifr.ingest.archives import ARCHIVE_SEPARATOR
from aifr.ingest.embedding import EmbeddingGenerator
from aifr.ingest.enumerate import (
    SNIFF_BYTES,
    Skipped,
    WorkspaceEnumerator,
    WorkspaceFile,
    is_binary,
)
from aifr.ingest.isolation import FileWorker, batches
from aifr.ingest.manifest import IngestCounts, ManifestEmitter, file_digest
from aifr.ingest.parsing import ParsedFile
from aifr.ingest.ports import ChunkIndex, Embedder, FileEntry

__all__ = ["IngestPipeline", "IngestReport", "ProgressCallback"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called with (files done, files to read) as changed files are stored."""


@dataclass(slots=True)
class IngestReport:
    """What one ingest did: file counts, chunks embedded, skips and secrets redacted."""

    repo: str
    counts: IngestCounts = field(default_factory=IngestCounts)
    chunks_embedded: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    redactions: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0


_FIRST_GROUP = 16  # files the first child parses, so that embedding starts early


class IngestPipeline:
    """Ingests a workspace into a :class:`ChunkIndex` through an :class:`Embedder`."""

    def __init__(
        self,
        *,
        embedder: Embedder,
        index: ChunkIndex,
        enumerator: WorkspaceEnumerator,
        worker: FileWorker,
        batch_size: int = 256,
        scratch_dir: Path | None = None,
    ) -> None:
        self.embedder = embedder
        self.generator = EmbeddingGenerator(embedder, batch_size=batch_size)
        self.index = index
        self.enumerator = enumerator
        self.worker = worker
        self.batch_size = max(1, batch_size)
        self.scratch_dir = scratch_dir

    def ingest(
        self, root: Path, repo: str, progress: ProgressCallback | None = None
    ) -> IngestReport:
        """Bring ``repo`` in the index up to date with the workspace at ``root``.

        Raises:
            IngestError: ``root`` cannot be read, or the embedder answered a wrong number
                of vectors.
        """
        started = time.perf_counter()
        if not repo or ARCHIVE_SEPARATOR in repo:
            raise IngestError(f"repository name {repo!r} is empty or malformed", repo=repo)
        report = IngestReport(repo)
        manifest = ManifestEmitter(repo)
        previous = self.index.files(repo)
        found = self.enumerator.enumerate(root)
        report.skipped.extend(found.skipped)
        plan = manifest.plan(previous, found.files)
        seen = set(plan.unchanged)
        report.counts.unchanged = len(plan.unchanged)
        candidates = list(plan.candidates)
        if self.scratch_dir is not None:
            self.scratch_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="aifr-ingest-", dir=self.scratch_dir) as tmp:
            archives = self._open_archives(plan.archives, Path(tmp), candidates, report)
            touched, to_read = self._sort_out(manifest, previous, candidates, report)
            seen.update(entry.path for entry in touched)
            self._read_and_store(manifest, previous, to_read, report, seen, progress)
        vanished = manifest.vanished(previous, seen | {a.path for a in archives})
        if vanished:
            self.index.remove_files(repo, vanished)
        if touched:
            self.index.touch_files(touched)
        for entry in archives:
            self.index.replace_file(entry, [], [])
            report.counts.added += manifest.is_new(previous, entry.path)
            report.counts.changed += not manifest.is_new(previous, entry.path)
        report.counts.removed = len(vanished)
        report.duration_s = time.perf_counter() - started
        logger.info(
            "ingested %s: %d added, %d changed, %d removed, %d unchanged, %d skipped",
            repo, report.counts.added, report.counts.changed, report.counts.removed,
            report.counts.unchanged, len(report.skipped),
        )  # fmt: skip
        return report

    def _open_archives(
        self,
        archives: Sequence[WorkspaceFile],
        scratch: Path,
        candidates: list[WorkspaceFile],
        report: IngestReport,
    ) -> list[FileEntry]:
        """Extract changed archives; their members join the candidates."""
        entries: list[FileEntry] = []
        limit = self.enumerator.max_file_bytes
        for number, archive in enumerate(archives):
            dest = scratch / f"archive-{number}"
            dest.mkdir()
            extraction = self.worker.extract(archive.absolute, dest)
            retry = False
            for refusal in extraction.refused:
                where = (
                    f"{archive.path}{ARCHIVE_SEPARATOR}{refusal.path}"
                    if refusal.path
                    else archive.path
                )
                report.skipped.append(Skipped(where, refusal.reason, refusal.detail))
                # A child that died may do better next time: leave the archive unrecorded.
                # A corrupt archive is recorded (with no members) and not reopened until
                # it changes.
                retry = retry or refusal.reason == "sandbox_failed"
            if retry:
                continue
            for member in extraction.extracted:
                on_disk = dest / member
                size = on_disk.stat().st_size
                path = f"{archive.path}{ARCHIVE_SEPARATOR}{member}"
                if size > limit:
                    report.skipped.append(Skipped(path, "too_large", f"{size} bytes > {limit}"))
                    continue
                candidates.append(WorkspaceFile(path, on_disk, size, archive.mtime_ns))
            entries.append(
                FileEntry(
                    report.repo,
                    archive.path,
                    file_digest(archive.absolute),
                    archive.size,
                    archive.mtime_ns,
                )
            )
        return entries

    @staticmethod
    def _sort_out(
        manifest: ManifestEmitter,
        previous: Mapping[str, FileEntry],
        candidates: Sequence[WorkspaceFile],
        report: IngestReport,
    ) -> tuple[list[FileEntry], list[WorkspaceFile]]:
        """Hash files whose ``stat`` moved: same hash means unchanged (only touched).

        A new file is sniffed here first: a binary one (never indexed, so new on every
        run) costs one 8 KiB read rather than a sandboxed child each time.
        """
        touched: list[FileEntry] = []
        to_read: list[WorkspaceFile] = []
        for item in candidates:
            known = previous.get(item.path)
            if known is None:
                if _sniffs_binary(item.absolute):
                    report.skipped.append(Skipped(item.path, "binary", "holds a NUL byte"))
                else:
                    to_read.append(item)
                continue
            try:
                digest = file_digest(item.absolute)
            except OSError:
                to_read.append(item)  # the worker reports why it cannot be read
                continue
            if digest == known.content_hash:
                touched.append(manifest.entry(item, digest))
                report.counts.unchanged += 1
            else:
                to_read.append(item)
        return touched, to_read

    def _read_and_store(
        self,
        manifest: ManifestEmitter,
        previous: Mapping[str, FileEntry],
        files: Sequence[WorkspaceFile],
        report: IngestReport,
        seen: set[str],
        progress: ProgressCallback | None,
    ) -> None:
        """Parse in groups (a sandboxed child each), embed and store in batches.

        The next group is parsed in a helper thread (its child is another process) while
        the model embeds the current one, and the first group is small, so the model
        starts early and the children's start-up and parsing hide behind embedding.
        """
        redactions: Counter[str] = Counter()
        done = 0
        if progress is not None:
            progress(0, len(files))
        groups = batches(files)
        if groups and len(groups[0]) > _FIRST_GROUP:
            groups[:1] = [groups[0][:_FIRST_GROUP], groups[0][_FIRST_GROUP:]]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="aifr-ingest-parse") as pool:
            upcoming: Future[list[ParsedFile | Skipped]] | None = None
            if groups:
                upcoming = pool.submit(self.worker.parse, report.repo, groups[0])
            for number, group in enumerate(groups):
                assert upcoming is not None  # noqa: S101  # submitted for every group
                results = upcoming.result()
                upcoming = (
                    pool.submit(self.worker.parse, report.repo, groups[number + 1])
                    if number + 1 < len(groups)
                    else None
                )
                pending: list[tuple[WorkspaceFile, ParsedFile]] = []
                for item, result in zip(group, results, strict=True):
                    if isinstance(result, Skipped):
                        report.skipped.append(result)
                        done += 1
                        continue
                    redactions.update(result.redactions)
                    pending.append((item, result))
                    if sum(len(p.chunks) for _, p in pending) >= self.batch_size:
                        done += self._store(manifest, previous, pending, report, seen)
                        pending = []
                        if progress is not None:
                            progress(done, len(files))
                done += self._store(manifest, previous, pending, report, seen)
                if progress is not None:
                    progress(done, len(files))
        report.redactions = dict(sorted(redactions.items()))

    def _store(
        self,
        manifest: ManifestEmitter,
        previous: Mapping[str, FileEntry],
        pending: Sequence[tuple[WorkspaceFile, ParsedFile]],
        report: IngestReport,
        seen: set[str],
    ) -> int:
        """Embed the chunks of ``pending`` files (each distinct text once) and store them."""
        every = [chunk for _, parsed in pending for chunk in parsed.chunks]
        vectors = iter(self.generator.vectors(every))
        for item, parsed in pending:
            entry = manifest.entry(item, parsed.content_hash)
            self.index.replace_file(entry, parsed.chunks, [next(vectors) for _ in parsed.chunks])
            report.chunks_embedded += len(parsed.chunks)
            seen.add(item.path)
            if manifest.is_new(previous, item.path):
                report.counts.added += 1
            else:
                report.counts.changed += 1
        return len(pending)


def _sniffs_binary(path: Path) -> bool:
    """Whether the first bytes of ``path`` mark it binary (unreadable: let the worker say)."""
    try:
        with path.open("rb") as handle:
            return is_binary(handle.read(SNIFF_BYTES))
    except OSError:
        return False
