"""Crafted archives: bombs, zip-slip, absolute names, links, devices and nesting."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

GOOD = "def useful():\n    return 'kept'\n"


def zip_with(
    path: Path, members: dict[str, bytes], *, symlinks: dict[str, str] | None = None
) -> Path:
    """A deflated zip holding ``members`` (name → bytes) and symlink entries."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return path


def tar_with(
    path: Path,
    members: dict[str, bytes],
    *,
    symlinks: dict[str, str] | None = None,
    hardlinks: dict[str, str] | None = None,
    devices: list[str] | None = None,
    mode: str = "w:gz",
) -> Path:
    """A tar (gzip by default) with regular files, links and character devices."""
    with tarfile.open(path, mode) as tf:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
        for name, target in (hardlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.LNKTYPE
            info.linkname = target
            tf.addfile(info)
        for name in devices or []:
            info = tarfile.TarInfo(name)
            info.type = tarfile.CHRTYPE
            info.devmajor, info.devminor = 1, 3
            tf.addfile(info)
    return path


def nested_zip(path: Path, depth: int) -> Path:
    """A zip holding a zip holding ... ``depth`` levels, each with ``level<N>.py``."""
    data = b""
    for level in range(depth, 0, -1):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"level{level}.py", GOOD.encode())
            if data:
                zf.writestr(f"inner{level + 1}.zip", data)
        data = buffer.getvalue()
    path.write_bytes(data)
    return path
