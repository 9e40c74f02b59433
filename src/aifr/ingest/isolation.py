"""Where untrusted files are parsed and archives extracted: in a sandboxed child, or here.

:class:`SandboxedWorker` (the default) runs :mod:`aifr.ingest.worker` through the one
process sandbox (:class:`aifr.invocation.sandbox.Sandbox`, the one ``sys.exec`` uses)
with CPU-time, memory, file-size and process limits (one process: the child cannot
start another) and under the sandbox backend of ``[exec] sandbox`` (Landlock, else
bubblewrap, else none with a warning; a configured backend that is missing refuses):
the child reads only the workspace holding the files it parses (or the one archive it
extracts), Python and aifr's own code, and the system folders; it writes only the
destination folder of an extraction (nothing when parsing); it has no network, and
home-directory credentials and the given hidden paths stay out of sight even inside
the workspace. A batch that fails (a limit hit, a crash) is halved and retried until
the file at fault is alone, so one hostile file is reported as ``sandbox_failed`` and the
others are still ingested.
:class:`InProcessWorker` does the same work in this process, for trusted workspaces
(``ingest.sandbox = false``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import JsonValue

from aifr.errors import AifrError, SandboxRefusalError
from aifr.ingest.archives import (
    ARCHIVE_SEPARATOR,
    ArchiveQuotas,
    ExtractionReport,
    extract_archive,
)
from aifr.ingest.chunk import ChunkLimits, ChunkPlanner
from aifr.ingest.enumerate import Skipped, WorkspaceFile
from aifr.ingest.parsing import (
    ParsedFile,
    limits_to_json,
    parse_file,
    parsed_from_json,
)
from aifr.ingest.sanitize import Sanitizer
from aifr.invocation.sandbox import CommandResult, Sandbox, SandboxLimits, SandboxRules
from aifr.invocation.sandbox_backends import SandboxMode

__all__ = ["FileWorker", "InProcessWorker", "IsolationLimits", "SandboxedWorker", "batches"]

logger = logging.getLogger(__name__)

# A child costs about 0.5 s to start (Python and aifr's imports), so it gets many files;
# a batch that fails is halved until the file at fault is alone.
_BATCH_FILES = 512
# -I drops PYTHONPATH (which the sandbox refuses anyway), so the child is told where this
# aifr lives: it then runs the same code whether aifr is installed or run from a checkout.
_PACKAGE_HOME = Path(__file__).resolve().parents[2]
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from aifr.ingest.worker import main; main()"
_BATCH_BYTES = 8 * 1024 * 1024


def _runtime_paths() -> tuple[Path, ...]:
    """What the child's interpreter reads besides the system folders.

    Its prefixes (a virtual environment's ``pyvenv.cfg`` and ``site-packages``) and
    aifr's own code.
    """
    found: list[str] = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    found += [os.path.dirname(os.path.realpath(sys.executable)), str(_PACKAGE_HOME)]
    return tuple(dict.fromkeys(Path(os.path.realpath(p)) for p in found))


@dataclass(frozen=True, slots=True)
class IsolationLimits:
    """Limits of one sandboxed child: wall time, CPU seconds, address space."""

    timeout_s: float = 120.0
    cpu_s: int = 60
    memory_bytes: int = 1024 * 1024 * 1024


class FileWorker(Protocol):
    """Parses files into sanitized chunks and extracts archives."""

    def parse(self, repo: str, files: Sequence[WorkspaceFile]) -> list[ParsedFile | Skipped]:
        """One result per file, in order."""
        ...

    def extract(self, archive: Path, dest: Path) -> ExtractionReport:
        """Extract ``archive`` into the empty directory ``dest`` under the quotas."""
        ...


class InProcessWorker:
    """Parses and extracts in this process: for workspaces the user trusts."""

    def __init__(
        self,
        *,
        max_file_bytes: int,
        quotas: ArchiveQuotas,
        limits: ChunkLimits | None = None,
    ) -> None:
        self.max_file_bytes = max_file_bytes
        self.quotas = quotas
        self._planner = ChunkPlanner(limits)
        self._sanitizer = Sanitizer()

    def parse(self, repo: str, files: Sequence[WorkspaceFile]) -> list[ParsedFile | Skipped]:
        """One result per file, in order."""
        return [
            parse_file(
                repo,
                f.path,
                f.absolute,
                planner=self._planner,
                sanitizer=self._sanitizer,
                max_bytes=self.max_file_bytes,
            )
            for f in files
        ]

    def extract(self, archive: Path, dest: Path) -> ExtractionReport:
        """Extract ``archive`` into ``dest`` under the quotas."""
        return extract_archive(archive, dest, self.quotas)


class SandboxedWorker:
    """Parses and extracts in a child process under limits (the default)."""

    def __init__(
        self,
        *,
        max_file_bytes: int,
        quotas: ArchiveQuotas,
        limits: ChunkLimits | None = None,
        isolation: IsolationLimits | None = None,
        mode: SandboxMode = "auto",
        hidden: Sequence[Path] = (),
        home: Path | None = None,
    ) -> None:
        self.max_file_bytes = max_file_bytes
        self.quotas = quotas
        self.chunk_limits = limits or ChunkLimits()
        self.isolation = isolation or IsolationLimits()
        self.mode: SandboxMode = mode
        self.hidden = tuple(hidden)
        self.home = home

    def rules(self, reads: Sequence[Path], writes: Sequence[Path]) -> SandboxRules:
        """What a child may see: ``reads``, writes only to ``writes``, never the hidden paths."""
        return SandboxRules.build(
            [*reads, *writes], reserved=self.hidden, home=self.home, extra_read=_runtime_paths()
        ).narrowed(reads, writes)

    def sandbox(self, output_bytes: int, rules: SandboxRules | None = None) -> Sandbox:
        """The process sandbox a child runs in: these limits, one process, no shell.

        ``rules`` confine it under the backend (without them it reads and writes nothing
        but the system folders, Python and aifr).
        """
        iso = self.isolation
        return Sandbox(
            mode=self.mode,
            rules=rules or self.rules((), ()),
            allow_commands=[sys.executable],
            limits=SandboxLimits(
                timeout_s=iso.timeout_s,
                cpu_s=iso.cpu_s,
                memory_bytes=iso.memory_bytes,
                file_bytes=max(self.quotas.max_total_bytes, 1),
                processes=1,
                output_bytes=output_bytes,
                stdin_bytes=16 * 1024 * 1024,
            ),
        )

    def check_backend(self) -> None:
        """Refuse before any child starts when the configured backend is missing.

        Raises:
            SandboxRefusalError: ``sandbox_unavailable``.
        """
        status = self.sandbox(1).status
        if status.refusal is not None:
            raise SandboxRefusalError(status.refusal, rule="sandbox_unavailable", mode=status.mode)

    def run_child(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        reads: Sequence[Path],
        writes: Sequence[Path],
        stdin: bytes,
        output_bytes: int,
    ) -> CommandResult:
        """Run ``argv`` (an interpreter command line) as a child under these limits and rules."""
        fd = os.open(cwd, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return self.sandbox(output_bytes, self.rules(reads, writes)).run(
                argv, cwd_fd=fd, stdin=stdin
            )
        finally:
            os.close(fd)

    def _call(
        self,
        request: dict[str, JsonValue],
        cwd: Path,
        output_bytes: int,
        *,
        reads: Sequence[Path],
        writes: Sequence[Path] = (),
    ) -> dict[str, object]:
        result = self.run_child(
            [sys.executable, "-I", "-B", "-c", _BOOT, str(_PACKAGE_HOME)],
            cwd=cwd,
            reads=reads,
            writes=writes,
            stdin=json.dumps(request).encode(),
            output_bytes=output_bytes,
        )
        if result.refused_paths:
            logger.warning("the ingest sandbox refused: %s", ", ".join(result.refused_paths))
        if result.returncode != 0:
            why = result.signal_name or f"exit status {result.returncode}"
            tail = result.stderr[-300:].decode("utf-8", "replace").strip().splitlines()
            raise _ChildFailedError(f"{why}: {tail[-1] if tail else 'no message'}")
        try:
            answer = json.loads(result.stdout)
        except ValueError as exc:
            raise _ChildFailedError("the worker answered no valid JSON") from exc
        if not isinstance(answer, dict):
            raise _ChildFailedError("the worker answered no JSON object")
        return answer

    def parse(self, repo: str, files: Sequence[WorkspaceFile]) -> list[ParsedFile | Skipped]:
        """One result per file, in order; a batch that fails is halved and retried.

        Raises:
            SandboxRefusalError: the configured sandbox backend is missing.
        """
        if files:
            self.check_backend()
        results: list[ParsedFile | Skipped] = []
        for batch in batches(files):
            results.extend(self._parse_batch(repo, batch))
        return results

    def _parse_batch(self, repo: str, batch: list[WorkspaceFile]) -> list[ParsedFile | Skipped]:
        request: dict[str, JsonValue] = {
            "op": "parse",
            "repo": repo,
            "max_bytes": self.max_file_bytes,
            "limits": limits_to_json(self.chunk_limits),
            "files": [[f.path, str(_real_parent(f.absolute))] for f in batch],
        }
        output_bytes = 6 * sum(f.size for f in batch) + 1024 * 1024
        try:
            answer = self._call(
                request, batch[0].absolute.parent, output_bytes, reads=_workspaces(batch)
            )
            rows = answer["results"]
            if not isinstance(rows, list) or len(rows) != len(batch):
                raise _ChildFailedError("the worker answered the wrong number of results")
            return [parsed_from_json(repo, row) for row in rows]
        except (AifrError, _ChildFailedError, KeyError, TypeError, ValueError) as exc:
            if len(batch) > 1:
                half = len(batch) // 2
                return self._parse_batch(repo, batch[:half]) + self._parse_batch(repo, batch[half:])
            logger.warning("sandboxed parse of %s failed: %s", batch[0].path, _why(exc))
            return [Skipped(batch[0].path, "sandbox_failed", _why(exc))]

    def extract(self, archive: Path, dest: Path) -> ExtractionReport:
        """Extract ``archive`` into ``dest`` in the child; a failed child refuses it whole.

        Raises:
            SandboxRefusalError: the configured sandbox backend is missing.
        """
        self.check_backend()
        quotas = self.quotas
        request: dict[str, JsonValue] = {
            "op": "extract",
            "archive": str(archive),
            "quotas": {
                "max_total_bytes": quotas.max_total_bytes,
                "max_files": quotas.max_files,
                "max_ratio": quotas.max_ratio,
                "max_depth": quotas.max_depth,
            },
        }
        try:
            answer = self._call(request, dest, 16 * 1024 * 1024, reads=[archive], writes=[dest])
            extracted, refused = answer["extracted"], answer["refused"]
            if not isinstance(extracted, list) or not isinstance(refused, list):
                raise _ChildFailedError("the worker answered a malformed report")
            return ExtractionReport(
                [str(p) for p in extracted],
                [Skipped(str(r[0]), str(r[1]), str(r[2])) for r in refused],
            )
        except (AifrError, _ChildFailedError, KeyError, TypeError, ValueError, IndexError) as exc:
            logger.warning("sandboxed extraction of %s failed: %s", archive.name, _why(exc))
            return ExtractionReport([], [Skipped("", "sandbox_failed", _why(exc))])


class _ChildFailedError(Exception):
    """The worker died, hit a limit or answered garbage (never leaves this module)."""


def _why(exc: Exception) -> str:
    return exc.message if isinstance(exc, AifrError) else str(exc)


def _real_parent(path: Path) -> Path:
    """``path`` with its folder resolved: bubblewrap mounts the real folders only."""
    return Path(os.path.realpath(path.parent)) / path.name


def _workspaces(files: Sequence[WorkspaceFile]) -> list[Path]:
    """The folders ``files`` were found in: the workspace root, an archive's extraction.

    A file's ``path`` (after the last archive separator) is relative to the folder it
    was found in, so that folder is its absolute path with as many parts cut off; a
    file whose absolute path does not end so is granted its own folder only.
    """
    found: set[Path] = set()
    for f in files:
        relative = Path(f.path.rsplit(ARCHIVE_SEPARATOR, 1)[-1])
        depth = len(relative.parts)
        absolute = _real_parent(f.absolute)
        if depth and absolute.parts[-depth:] == relative.parts:
            found.add(absolute.parents[depth - 1])
        else:
            found.add(absolute.parent)
    ordered = sorted(found, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in ordered:
        if not any(path == k or k in path.parents for k in kept):
            kept.append(path)
    return kept


def batches(files: Sequence[WorkspaceFile]) -> list[list[WorkspaceFile]]:
    """``files`` in order, cut into groups one sandboxed child parses (by count and bytes)."""
    batches: list[list[WorkspaceFile]] = []
    current: list[WorkspaceFile] = []
    size = 0
    for f in files:
        if current and (len(current) >= _BATCH_FILES or size + f.size > _BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(f)
        size += f.size
    if current:
        batches.append(current)
    return batches
