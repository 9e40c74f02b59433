"""Path confinement for ``io.fs.*`` and ``sys.exec``: configured roots, no escapes.

A path is checked twice. First as text: NUL bytes, ``..`` components (also after
percent-decoding, repeated, and after Unicode NFKC normalization, so ``%2e%2e/``,
``%252e%252e/`` and fullwidth dots and slashes (U+FF0E, U+FF0F) are caught), and
absolute paths outside every root are refused. Then on disk: the path is walked one component at a time from an open
descriptor of its root with ``O_NOFOLLOW``, so a symlink anywhere on the way, including
one swapped in between a check and its use, is refused rather than followed. Handlers
then act on ``(directory descriptor, name)`` pairs, never on a re-resolved string.
"""

from __future__ import annotations

import errno
import os
import stat
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from aifr.errors import ConfigError, ExecutionError, SandboxRefusalError
from aifr.stdlib.permissions import PermissionTable

__all__ = [
    "ConfinedPath",
    "Confinement",
    "check_entry",
    "entry_kind",
    "fs_error",
    "open_file_for_reading",
    "refuse_path",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DECODE_ROUNDS = 4
_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "char_device",
    stat.S_IFBLK: "block_device",
}


def refuse_path(rule: str, raw: str, why: str) -> SandboxRefusalError:
    """The refusal for path ``raw`` under ``rule``, with the reason in the message."""
    return SandboxRefusalError(f"path {raw!r} refused ({rule}): {why}", rule=rule, path=raw)


@dataclass(frozen=True, slots=True)
class ConfinedPath:
    """A path that passed the text checks: a root and the components below it."""

    raw: str
    root: Path
    parts: tuple[str, ...]

    @property
    def absolute(self) -> Path:
        """The absolute path (no symlinks: they are refused on the way)."""
        return self.root.joinpath(*self.parts)

    @property
    def relative(self) -> str:
        """The path below its root, ``"."`` for the root itself."""
        return str(PurePosixPath(*self.parts)) if self.parts else "."

    @property
    def name(self) -> str:
        """The last component (empty for a root)."""
        return self.parts[-1] if self.parts else ""


def _variants(raw: str) -> list[str]:
    """The spellings an upstream layer might decode ``raw`` into."""
    found = [raw]
    current = raw
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(current)
        if decoded == current:
            break
        found.append(decoded)
        current = decoded
    found.extend([unicodedata.normalize("NFKC", v) for v in list(found)])
    return found


class Confinement:
    """The roots paths must stay under, and the reserved folders inside them.

    Relative paths are taken below the first root. ``reserved`` paths (the state
    folder ``.aifr/``, the project's ``aifr.toml`` and policy folder) are refused even
    when a root contains them, so an agent cannot rewrite the rules that govern it; a
    change to a folder holding one (a move or delete of its parent) is refused too.
    """

    def __init__(
        self,
        roots: Sequence[Path],
        *,
        reserved: Sequence[Path] = (),
        permissions: PermissionTable | None = None,
    ) -> None:
        if not roots:
            raise ConfigError("fs.roots is empty: configure at least one root", key="fs.roots")
        self.roots = tuple(Path(os.path.realpath(r)) for r in roots)
        self._given = tuple(Path(os.path.abspath(r)) for r in roots)
        self.reserved = tuple(Path(os.path.realpath(r)) for r in reserved)
        self.permissions = permissions

    def check_caller(self, absolute: Path, raw: str) -> None:
        """Refuse ``absolute`` when the current principal (a plugin) did not ask for it.

        Raises:
            PluginPermissionError: the path is outside the plugin's fs roots.
        """
        if self.permissions is not None:
            self.permissions.check_path(absolute, raw)

    def locate(self, raw: str, *, change: bool = False) -> ConfinedPath:
        """Check ``raw`` as text and split it into a root and components.

        With ``change`` (the path is to be written, moved or deleted) a folder holding a
        reserved path is refused as well.

        Raises:
            SandboxRefusalError: ``invalid_path``, ``path_outside_root`` or ``path_reserved``.
            PluginPermissionError: the current principal is a plugin that did not ask
                for an fs root holding the path.
        """
        if not raw or "\0" in raw:
            raise refuse_path("invalid_path", raw, "empty or holds a NUL byte")
        for variant in _variants(raw):
            parts = variant.replace("\\", "/").split("/")
            if ".." in parts:
                raise refuse_path("path_outside_root", raw, "'..' components are not allowed")
            if variant is not raw and variant.startswith(("/", "\\")) and not raw.startswith("/"):
                raise refuse_path("path_outside_root", raw, "decodes to an absolute path")
        located = self._split(raw)
        for reserved in self.reserved:
            if located.absolute == reserved or reserved in located.absolute.parents:
                raise refuse_path(
                    "path_reserved", raw, "aifr's state, configuration and policies are off limits"
                )
            if change and located.parts and located.absolute in reserved.parents:
                raise refuse_path(
                    "path_reserved", raw, f"it holds {str(reserved)!r}, which aifr reserves"
                )
        self._refuse_reserved_by_identity(located, change=change)
        self.check_caller(located.absolute, raw)
        return located

    def _refuse_reserved_by_identity(self, located: ConfinedPath, *, change: bool) -> None:
        """Refuse a path that is, or is inside, a reserved folder by another spelling.

        On a case-insensitive filesystem (macOS and Windows by default) ``POLICIES/x``
        and ``.AIFR/aifr.db`` reach the reserved folders although no text comparison
        says so; a bind mount or a second hard-linked name does the same anywhere. So the
        target's existing components are compared by file identity (device and inode)
        with the reserved paths, and, for a change, with the folders holding them.

        Raises:
            SandboxRefusalError: ``path_reserved``.
        """
        if not self.reserved or not located.parts:
            return
        reserved_ids = {_identity(r): r for r in self.reserved}
        reserved_ids.pop(None, None)
        if not reserved_ids:
            return
        for end in range(len(located.parts), 0, -1):
            identity = _identity(located.root.joinpath(*located.parts[:end]))
            if identity is None:
                continue  # not there yet: its nearest existing folder decides
            reserved = reserved_ids.get(identity)
            if reserved is not None:
                raise refuse_path(
                    "path_reserved",
                    located.raw,
                    f"it is {str(reserved)!r} by another spelling; aifr's state, "
                    "configuration and policies are off limits",
                )
            if change and end == len(located.parts):
                holders = {
                    _identity(parent): r
                    for r in self.reserved
                    for parent in r.parents
                    if located.root in (parent, *parent.parents) and parent != located.root
                }
                holder = holders.get(identity)
                if holder is not None:
                    raise refuse_path(
                        "path_reserved",
                        located.raw,
                        f"it holds {str(holder)!r}, which aifr reserves",
                    )

    def _split(self, raw: str) -> ConfinedPath:
        parts = tuple(p for p in raw.split("/") if p not in ("", "."))
        if not raw.startswith("/"):
            return ConfinedPath(raw, self.roots[0], parts)
        for real, given in zip(self.roots, self._given, strict=True):
            for base in (real, given):
                base_parts = base.parts[1:]
                if parts[: len(base_parts)] == base_parts:
                    return ConfinedPath(raw, real, parts[len(base_parts) :])
        raise refuse_path("path_outside_root", raw, "not under any configured root")

    @contextmanager
    def directory(
        self, root: Path, parts: Sequence[str], *, raw: str, created: list[str] | None = None
    ) -> Iterator[int]:
        """Open the directory ``root/parts`` without following symlinks; yield its fd.

        With ``created`` given, missing directories are made and their relative paths
        appended to it (so a caller can undo them).

        Raises:
            SandboxRefusalError: ``symlink_refused`` for a symlink on the way.
            ExecutionError: a component is missing or not a directory.
        """
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for index, name in enumerate(parts):
                child = self._step(fd, name, raw, parts[: index + 1], created)
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def parent(self, target: ConfinedPath, *, created: list[str] | None = None) -> Iterator[int]:
        """Open the directory holding ``target`` (see :meth:`directory`)."""
        if not target.parts:
            raise refuse_path("path_is_root", target.raw, "a root itself cannot be changed")
        with self.directory(target.root, target.parts[:-1], raw=target.raw, created=created) as fd:
            yield fd

    def probe(self, target: ConfinedPath) -> tuple[list[str], os.stat_result | None]:
        """Walk to ``target``'s parent: missing parent folders, and the entry's ``lstat``.

        Raises:
            SandboxRefusalError: ``symlink_refused`` for a symlink on the way.
            ExecutionError: a component on the way is not a directory.
        """
        if not target.parts:
            raise refuse_path("path_is_root", target.raw, "a root itself cannot be changed")
        parents = target.parts[:-1]
        fd = os.open(target.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for index, name in enumerate(parents):
                try:
                    child = self._step(fd, name, target.raw, parents[: index + 1], None)
                except ExecutionError as exc:
                    if exc.details.get("errno") != "ENOENT":
                        raise
                    missing = ["/".join(parents[: end + 1]) for end in range(index, len(parents))]
                    return missing, None
                os.close(fd)
                fd = child
            try:
                return [], os.stat(target.name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return [], None
            except OSError as exc:  # a name too long, a permission refused
                raise fs_error(exc, target.raw) from None
        finally:
            os.close(fd)

    @staticmethod
    def _step(
        fd: int, name: str, raw: str, walked: Sequence[str], created: list[str] | None
    ) -> int:
        try:
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if created is None:
                    raise
                os.mkdir(name, 0o777, dir_fd=fd)
                created.append("/".join(walked))
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and _is_link(fd, name)):
                raise refuse_path(
                    "symlink_refused", raw, f"{'/'.join(walked)!r} is a symbolic link"
                ) from None
            raise fs_error(exc, raw) from None
        return child


def _identity(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``path`` itself (a symlink is not followed); ``None`` if absent."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:  # missing, or not reachable: nothing to compare
        return None
    return info.st_dev, info.st_ino


def entry_kind(info: os.stat_result) -> str:
    """``file``, ``directory``, ``symlink``... for an ``lstat`` result."""
    return _TYPES.get(stat.S_IFMT(info.st_mode), "other")


def check_entry(target: ConfinedPath, info: os.stat_result | None, *, must_exist: bool) -> None:
    """Refuse an entry that is a symlink, a hard-linked file or not a file or folder.

    Raises:
        SandboxRefusalError: ``symlink_refused``, ``hardlink_refused`` or ``not_a_file``.
        ExecutionError: ``must_exist`` and there is no entry.
    """
    if info is None:
        if must_exist:
            raise ExecutionError(f"{target.raw!r} does not exist", path=target.raw, errno="ENOENT")
        return
    if stat.S_ISLNK(info.st_mode):
        raise refuse_path("symlink_refused", target.raw, "the entry is a symbolic link")
    if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
        raise refuse_path("hardlink_refused", target.raw, "the file has other hard links")
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise refuse_path("not_a_file", target.raw, f"the entry is a {entry_kind(info)}")


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:  # gone or swapped since: not a link we could follow
        return False


def fs_error(exc: OSError, raw: str) -> ExecutionError:
    """Translate an ``OSError`` on ``raw`` into an ``ExecutionError`` naming the path."""
    name = errno.errorcode.get(exc.errno or 0, "EIO")
    return ExecutionError(f"{raw!r}: {exc.strerror or exc}", path=raw, errno=name)


def open_file_for_reading(confinement: Confinement, raw: str) -> tuple[int, os.stat_result]:
    """A descriptor on the regular file ``raw`` inside the roots, and its ``fstat``.

    Walked from the root without following a symlink (as ``io.fs.read`` does); the caller
    closes the descriptor.

    Raises:
        SandboxRefusalError: outside the roots, reserved, a symlink, a hard-linked file,
            or not a regular file.
        PluginPermissionError: a plugin that did not ask for a root holding the path.
        ExecutionError: the file does not exist or cannot be opened.
    """
    target = confinement.locate(raw)
    with confinement.parent(target) as parent_fd:
        try:
            fd = os.open(target.name, _FILE_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise refuse_path("symlink_refused", raw, "the entry is a symbolic link") from None
            if exc.errno == errno.ENXIO:
                raise refuse_path("not_a_file", raw, "the entry is a socket") from None
            raise fs_error(exc, raw) from None
    try:
        info = os.fstat(fd)
        check_entry(target, info, must_exist=True)
        if not stat.S_ISREG(info.st_mode):
            raise refuse_path("not_a_file", raw, f"the entry is a {entry_kind(info)}")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, info
