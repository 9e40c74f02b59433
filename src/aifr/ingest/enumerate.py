"""Which files of a workspace are ingested: ``.gitignore`` rules, globs, caps, symlinks.

The walk is deterministic (entries sorted by name at every level) and never enters
``.git/`` or ``.aifr/``. Ignore files nest as in git: a ``.gitignore`` applies to its own
directory and below, and the deepest file with a matching pattern decides. Only ``stat``
runs here; whether a file is binary is sniffed when it is read (:func:`is_binary`), so a
re-ingest of an unchanged workspace opens no file at all.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pathspec import GitIgnoreSpec

from aifr.errors import IngestError
from aifr.redaction import scrub

__all__ = [
    "NEVER_ENTERED",
    "SNIFF_BYTES",
    "EnumerationResult",
    "Skipped",
    "WorkspaceEnumerator",
    "WorkspaceFile",
    "is_archive",
    "is_binary",
]

logger = logging.getLogger(__name__)

NEVER_ENTERED = frozenset({".git", ".aifr"})
SNIFF_BYTES = 8192
_IGNORE_FILE = ".gitignore"
_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


@dataclass(frozen=True, slots=True)
class WorkspaceFile:
    """A regular file to ingest: its path in the workspace (POSIX) and its ``stat`` facts."""

    path: str
    absolute: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file or entry left out, and why (``too_large``, ``binary``, ``symlink_escape``...)."""

    path: str
    reason: str
    detail: str = ""


@dataclass(slots=True)
class EnumerationResult:
    """What a walk found: files to ingest, in order, and what it left out with reasons."""

    files: list[WorkspaceFile] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def is_archive(name: str) -> bool:
    """Whether ``name`` has the suffix of an archive ingestion opens (zip, tar, tar.gz)."""
    return name.lower().endswith(_ARCHIVE_SUFFIXES)


def is_binary(head: bytes) -> bool:
    """Whether the first bytes of a file mark it as binary (a NUL byte, as git decides)."""
    return b"\0" in head[:SNIFF_BYTES]


class WorkspaceEnumerator:
    """Walks a workspace and yields the files ingestion should read.

    ``include`` and ``exclude`` are gitwildmatch globs relative to the root (``src/**``,
    ``*.min.js``); an empty ``include`` means every file. Files over ``max_file_bytes``
    are skipped with the reason ``too_large`` (archives, whose members are held to
    ``max_file_bytes`` each, may be up to ``max_archive_bytes``); symlinks whose target leaves the root are
    refused (``symlink_escape``); symlinked directories are never followed, so a loop
    cannot trap the walk.
    """

    def __init__(
        self,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        max_file_bytes: int = 1024 * 1024,
        max_archive_bytes: int = 256 * 1024 * 1024,
        use_gitignore: bool = True,
    ) -> None:
        self._include = GitIgnoreSpec.from_lines(include) if include else None
        self._exclude = GitIgnoreSpec.from_lines(exclude)
        self.max_file_bytes = max_file_bytes
        self.max_archive_bytes = max_archive_bytes
        self.use_gitignore = use_gitignore

    def enumerate(self, root: Path) -> EnumerationResult:
        """Every ingestible file under ``root`` (names sorted at each level), and the skips.

        Raises:
            IngestError: ``root`` is not a readable directory.
        """
        try:
            real_root = root.resolve(strict=True)
        except OSError as exc:
            raise IngestError(
                f"workspace {str(root)!r} cannot be read: {exc.strerror}", path=str(root)
            ) from exc
        if not real_root.is_dir():
            raise IngestError(f"workspace {str(root)!r} is not a directory", path=str(root))
        result = EnumerationResult()
        for entry in self._walk(real_root, "", [], result):
            self._consider(real_root, entry, result)
        return result

    def _walk(
        self,
        directory: Path,
        rel_dir: str,
        ignores: list[tuple[str, GitIgnoreSpec]],
        result: EnumerationResult,
    ) -> Iterator[tuple[str, os.DirEntry[str]]]:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            result.skipped.append(Skipped(rel_dir or ".", "unreadable", exc.strerror or ""))
            return
        if self.use_gitignore:
            spec = _load_ignore(directory / _IGNORE_FILE, rel_dir, result)
            if spec is not None:
                ignores = [*ignores, (rel_dir, spec)]
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if scrub(entry.name) != entry.name:  # paths are stored and shown: no secret in them
                shown = f"{scrub(rel_dir)}/{scrub(entry.name)}" if rel_dir else scrub(entry.name)
                result.skipped.append(Skipped(shown, "secret_in_path", "the name holds a secret"))
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                if entry.name in NEVER_ENTERED or self._ignored(rel + "/", ignores):
                    continue
                if self._exclude.match_file(rel + "/"):
                    continue
                yield from self._walk(Path(entry.path), rel, ignores, result)
                continue
            if self._ignored(rel, ignores) or self._exclude.match_file(rel):
                continue
            if self._include is not None and not self._include.match_file(rel):
                continue
            yield rel, entry

    @staticmethod
    def _ignored(rel: str, ignores: list[tuple[str, GitIgnoreSpec]]) -> bool:
        """Whether the deepest ``.gitignore`` with a matching pattern ignores ``rel``."""
        for base, spec in reversed(ignores):
            local = rel[len(base) + 1 :] if base else rel
            verdict = spec.check_file(local).include
            if verdict is not None:
                return verdict
        return False

    def _consider(
        self, real_root: Path, item: tuple[str, os.DirEntry[str]], result: EnumerationResult
    ) -> None:
        rel, entry = item
        try:
            if entry.is_symlink():
                target = Path(entry.path).resolve(strict=True)
                inside = (
                    target.relative_to(real_root).parts
                    if target.is_relative_to(real_root)
                    else None
                )
                if inside is None or NEVER_ENTERED.intersection(inside):
                    why = "points outside the workspace or into .git/.aifr"
                    result.skipped.append(Skipped(rel, "symlink_escape", why))
                    return
                info = target.stat()
                if stat.S_ISDIR(info.st_mode):
                    return  # symlinked directories are not followed
            else:
                info = entry.stat(follow_symlinks=False)
        except OSError as exc:
            result.skipped.append(Skipped(rel, "unreadable", exc.strerror or "broken link"))
            return
        if not stat.S_ISREG(info.st_mode):
            result.skipped.append(Skipped(rel, "not_regular", "device, socket or FIFO"))
            return
        cap = self.max_archive_bytes if is_archive(rel) else self.max_file_bytes
        if info.st_size > cap:
            result.skipped.append(Skipped(rel, "too_large", f"{info.st_size} bytes > {cap}"))
            return
        result.files.append(WorkspaceFile(rel, Path(entry.path), info.st_size, info.st_mtime_ns))


def _load_ignore(path: Path, rel_dir: str, result: EnumerationResult) -> GitIgnoreSpec | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        where = f"{rel_dir}/{_IGNORE_FILE}" if rel_dir else _IGNORE_FILE
        result.skipped.append(Skipped(where, "unreadable", exc.strerror or ""))
        return None
    return GitIgnoreSpec.from_lines(text.splitlines())
