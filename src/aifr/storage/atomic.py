"""Writing a file so a reader sees the old content or the whole new one, never a part.

The seed's ``StoragePort.atomic_write``: every findings store exports through it. The
data goes to a temporary file in the target's folder (same filesystem, so the rename is
atomic), is flushed and fsynced, then renamed over the target; the folder is fsynced so
the rename survives a crash. Any failure, including one raised by the chunk iterator
(an export that fails halfway), removes the temporary file and leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from aifr.errors import StorageError

__all__ = ["write_atomically"]


def write_atomically(path: Path, chunks: Iterable[bytes]) -> int:
    """Write ``chunks`` to ``path`` atomically; returns the number of bytes written.

    Raises:
        StorageError: the folder is missing or not writable, or the disk failed.
    """
    target = Path(path)
    try:
        fd, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
        )
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc}", path=str(target)) from exc
    written = 0
    try:
        try:  # a replaced file keeps its mode; a new one is readable like any export
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            mode = 0o644
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                written += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write {target}: {exc}", path=str(target)) from exc
        raise
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return written
