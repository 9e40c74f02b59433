"""``io.fs.*``: read, list and stat inside the roots; the changes live in ``fs_changes``.

Reads are LOW risk. Writes and moves are MEDIUM and compensable: each returns
``{"undo": {"token": ...}}`` for ``io.fs.restore``, which puts back the exact prior
state (the prior inode itself, so content, mode and mtime match byte for byte) and is
itself undoable. Deletes move the entry into the trash under ``.aifr/fs/blobs`` and are
HIGH (DELETE always is). Every refusal names its rule and changes nothing.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import stat

from typing_extensions import TypedDict

from aifr.capabilities import Capability, capability
from aifr.errors import ExecutionError
from aifr.stdlib.confine import Confinement, check_entry, entry_kind, fs_error, refuse_path
from aifr.stdlib.fs_changes import build_change_capabilities
from aifr.stdlib.journal import FsJournal
from aifr.stdlib.limits import Encoding, Positive, too_large

__all__ = ["build_fs_capabilities"]

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class FileContent(TypedDict):
    """What ``io.fs.read_file`` returns."""

    path: str
    content: str
    encoding: str
    size: int
    sha256: str


class DirEntry(TypedDict):
    """One entry of a listing (symlinks are reported, never followed)."""

    name: str
    type: str
    size: int


class Listing(TypedDict):
    """What ``io.fs.list_dir`` returns."""

    path: str
    entries: list[DirEntry]
    truncated: bool


class FileStat(TypedDict):
    """What ``io.fs.stat`` returns (``lstat``: a symlink is described, not followed)."""

    path: str
    exists: bool
    type: str | None
    size: int | None
    mode: int | None
    mtime_ns: int | None
    nlink: int | None


def _decode(data: bytes, encoding: Encoding, raw: str) -> str:
    if encoding == "base64":
        return base64.b64encode(data).decode("ascii")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        raise ExecutionError(
            f"{raw!r} is not valid {encoding}; read it with encoding=base64",
            path=raw,
            encoding=encoding,
        ) from None


def _open_for_read(parent_fd: int, name: str, raw: str) -> int:
    """Open ``name`` in ``parent_fd`` for reading without following or blocking on it."""
    try:
        return os.open(name, _READ_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refuse_path("symlink_refused", raw, "the entry is a symbolic link") from None
        if exc.errno == errno.ENXIO:  # a socket (or a device with no driver)
            raise refuse_path("not_a_file", raw, "the entry is a socket") from None
        raise fs_error(exc, raw) from None


def build_fs_capabilities(
    *, confinement: Confinement, journal: FsJournal, max_read_bytes: int, max_write_bytes: int
) -> list[Capability]:
    """The ``io.fs.*`` capabilities over ``confinement``, journaled in ``journal``."""
    return [
        *_readers(confinement, max_read_bytes),
        *build_change_capabilities(
            confinement=confinement, journal=journal, max_write_bytes=max_write_bytes
        ),
    ]


def _readers(confinement: Confinement, max_read_bytes: int) -> list[Capability]:
    @capability(
        "io.fs.read_file",
        operation="READ",
        risk="LOW",
        idempotent=True,
        tags=("stdlib", "fs"),
        justification="reads a file inside the configured roots",
    )
    def read_file(
        path: str, encoding: Encoding = "utf-8", max_bytes: Positive | None = None
    ) -> FileContent:
        """Read a file inside the configured roots.

        Args:
            path: File path, relative to the first root or absolute inside a root.
            encoding: Text encoding, or ``base64`` for binary content.
            max_bytes: Refuse files larger than this (at most the configured cap).
        """
        limit = min(max_bytes or max_read_bytes, max_read_bytes)
        target = confinement.locate(path)
        with confinement.parent(target) as parent_fd:
            fd = _open_for_read(parent_fd, target.name, path)
        try:
            info = os.fstat(fd)
            check_entry(target, info, must_exist=True)
            if not stat.S_ISREG(info.st_mode):
                raise refuse_path("not_a_file", path, "the entry is a directory")
            if info.st_size > limit:
                raise too_large("file_too_large", path, info.st_size, limit)
            data = b""
            while len(data) <= limit and (chunk := os.read(fd, 1 << 20)):
                data += chunk
            if len(data) > limit:
                raise too_large("file_too_large", path, len(data), limit)
        finally:
            os.close(fd)
        return FileContent(
            path=target.relative,
            content=_decode(data, encoding, path),
            encoding=encoding,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )

    @capability(
        "io.fs.list_dir",
        operation="READ",
        risk="LOW",
        idempotent=True,
        tags=("stdlib", "fs"),
        justification="lists a folder inside the configured roots",
    )
    def list_dir(path: str = ".", max_entries: Positive = 1000) -> Listing:
        """List a folder inside the configured roots, sorted by name.

        Args:
            path: Folder path, relative to the first root or absolute inside a root.
            max_entries: At most this many entries are returned.
        """
        target = confinement.locate(path)
        with confinement.directory(target.root, target.parts, raw=path) as fd:
            names = sorted(os.listdir(fd))
            entries: list[DirEntry] = []
            for name in names[: max(0, max_entries)]:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                entries.append(DirEntry(name=name, type=entry_kind(info), size=info.st_size))
        return Listing(path=target.relative, entries=entries, truncated=len(names) > len(entries))

    @capability(
        "io.fs.stat",
        operation="READ",
        risk="LOW",
        idempotent=True,
        tags=("stdlib", "fs"),
        justification="describes an entry inside the configured roots",
    )
    def stat_path(path: str) -> FileStat:
        """Describe an entry inside the roots without following a final symlink.

        Args:
            path: Entry path, relative to the first root or absolute inside a root.
        """
        target = confinement.locate(path)
        if target.parts:
            _, info = confinement.probe(target)
        else:
            info = os.stat(target.root)
        return FileStat(
            path=target.relative,
            exists=info is not None,
            type=entry_kind(info) if info else None,
            size=info.st_size if info else None,
            mode=stat.S_IMODE(info.st_mode) if info else None,
            mtime_ns=info.st_mtime_ns if info else None,
            nlink=info.st_nlink if info else None,
        )

    return [read_file, list_dir, stat_path]
