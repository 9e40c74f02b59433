"""Archive extraction under quotas: zip, tar and tar.gz, with every unsafe entry refused.

An entry is refused, reported and skipped (the rest of the archive goes on) when its name
escapes the destination (``../x``, ``/etc/x``, a drive letter), when it is a symlink,
hardlink, device or FIFO, or when it inflates past the compression-ratio cap. The quotas
on total bytes and file count hold for the whole archive, nested archives included; once
one is spent the remaining entries are refused together. Sizes are counted while bytes
are inflated, never taken from headers, which a bomb can forge. Files are created with
``O_EXCL | O_NOFOLLOW`` inside a directory this module made, so nothing lands elsewhere.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aifr.ingest.enumerate import Skipped, is_archive

__all__ = [
    "ARCHIVE_SEPARATOR",
    "ArchiveQuotas",
    "ExtractionReport",
    "extract_archive",
    "is_archive",
]

logger = logging.getLogger(__name__)

ARCHIVE_SEPARATOR = "!/"  # lib.zip!/src/a.py names a member, as in jar: URLs
_READ = 65536
_RATIO_FLOOR = 64 * 1024  # a small file may compress well without being a bomb
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True, slots=True)
class ArchiveQuotas:
    """Caps on one top-level archive and everything nested in it."""

    max_total_bytes: int = 256 * 1024 * 1024
    max_files: int = 10_000
    max_ratio: float = 100.0
    max_depth: int = 2


@dataclass(slots=True)
class ExtractionReport:
    """Members written (paths under the destination) and entries refused, with reasons."""

    extracted: list[str] = field(default_factory=list)
    refused: list[Skipped] = field(default_factory=list)


class _Refused(Exception):  # noqa: N818  # internal control flow, never leaves this module
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class _Budget:
    quotas: ArchiveQuotas
    total_bytes: int = 0
    files: int = 0


def extract_archive(archive: Path, dest: Path, quotas: ArchiveQuotas) -> ExtractionReport:
    """Extract ``archive`` into the empty directory ``dest`` under ``quotas``.

    A nested archive's members land under ``<member>!/`` (the nested archive file itself
    is not kept). An archive that cannot be read at all is one refusal, not an error;
    refusals of the archive as a whole carry the empty path.
    """
    report = ExtractionReport()
    _extract(archive, dest, "", 1, _Budget(quotas), report)
    return report


def _extract(
    archive: Path, dest: Path, prefix: str, depth: int, budget: _Budget, report: ExtractionReport
) -> None:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                entries = _zip_entries(zf, budget.quotas)
                _extract_entries(entries, dest, prefix, depth, budget, report)
        else:
            packed = max(archive.stat().st_size, 1)
            with tarfile.open(archive, "r:*") as tf:
                entries = _tar_entries(tf, packed, budget)
                _extract_entries(entries, dest, prefix, depth, budget, report)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError, ValueError) as exc:
        report.refused.append(Skipped(prefix, "archive_corrupt", str(exc)[:200]))


@dataclass(frozen=True, slots=True)
class _Member:
    """A regular entry cleared to be written: where, its bytes, and what its ratio is of."""

    parts: list[str]
    source: IO[bytes]
    ratio_base: int
    inflated: int = 0  # bytes this compressed stream already gave (tar.gz: one stream)


_Entry = tuple[str, Callable[[], _Member | None]]  # name, then the checks (None: a folder)


def _zip_entries(zf: zipfile.ZipFile, quotas: ArchiveQuotas) -> Iterator[_Entry]:
    for info in zf.infolist():

        def prepare(info: zipfile.ZipInfo = info) -> _Member | None:
            if info.is_dir():
                _safe_parts(info.filename)
                return None
            kind = (info.external_attr >> 16) & 0o170000
            if kind == 0o120000:
                raise _Refused("archive_link", "symlink")
            if kind not in (0, 0o100000):
                raise _Refused("archive_special", "device, FIFO or other special entry")
            packed = max(info.compress_size, 1)
            if info.file_size > _RATIO_FLOOR and info.file_size / packed > quotas.max_ratio:
                raise _Refused("archive_ratio", _ratio_text(info.file_size, packed))
            parts = _safe_parts(info.filename)
            return _Member(parts, zf.open(info), packed)

        yield info.filename, prepare


def _tar_entries(tf: tarfile.TarFile, packed: int, budget: _Budget) -> Iterator[_Entry]:
    start = budget.total_bytes
    for member in tf:

        def prepare(member: tarfile.TarInfo = member) -> _Member | None:
            if member.isdir():
                _safe_parts(member.name)
                return None
            if member.issym() or member.islnk():
                raise _Refused("archive_link", f"link to {member.linkname!r}")
            if not member.isreg():
                raise _Refused("archive_special", "device, FIFO or other special entry")
            parts = _safe_parts(member.name)
            source = tf.extractfile(member)
            if source is None:
                raise _Refused("archive_corrupt", "entry has no data")
            return _Member(parts, source, packed, inflated=budget.total_bytes - start)

        yield member.name, prepare


def _extract_entries(
    entries: Iterator[_Entry],
    dest: Path,
    prefix: str,
    depth: int,
    budget: _Budget,
    report: ExtractionReport,
) -> None:
    """Write each entry that passes its checks; record each refusal and go on."""
    for name, prepare in entries:
        label = prefix + name
        try:
            member = prepare()
            if member is None:
                continue
            with member.source as source:
                _write_member(source, dest, member, budget, label)
        except _Refused as refusal:
            report.refused.append(Skipped(label, refusal.reason, refusal.detail))
            if refusal.reason in ("archive_total_size", "archive_file_count"):
                return
            continue
        _after_member(dest, member.parts, prefix, depth, budget, report)


def _after_member(
    dest: Path,
    parts: list[str],
    prefix: str,
    depth: int,
    budget: _Budget,
    report: ExtractionReport,
) -> None:
    rel = "/".join(parts)
    if not is_archive(rel):
        report.extracted.append(rel if not prefix else f"{prefix}{rel}")
        return
    written = dest.joinpath(*parts)
    label = f"{prefix}{rel}"
    if depth >= budget.quotas.max_depth:
        written.unlink()
        report.refused.append(
            Skipped(label, "archive_depth", f"nesting deeper than {budget.quotas.max_depth}")
        )
        return
    nested_dir = dest.joinpath(*parts[:-1], parts[-1] + "!")
    try:
        nested_dir.mkdir()
    except OSError as exc:
        written.unlink()
        report.refused.append(Skipped(label, "archive_corrupt", f"cannot unpack: {exc.strerror}"))
        return
    nested = ExtractionReport()
    _extract(written, nested_dir, "", depth + 1, budget, nested)
    written.unlink()
    head = f"{rel}{ARCHIVE_SEPARATOR}"
    report.extracted.extend(f"{prefix}{head}{path}" for path in nested.extracted)
    report.refused.extend(
        Skipped(
            f"{label}{ARCHIVE_SEPARATOR}{item.path}" if item.path else label,
            item.reason,
            item.detail,
        )
        for item in nested.refused
    )


def _safe_parts(name: str) -> list[str]:
    """The path components of an entry name, or a refusal if it could leave the destination."""
    if "\0" in name:
        raise _Refused("archive_unsafe_path", "name holds a NUL byte")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or _DRIVE.match(unified):
        raise _Refused("archive_unsafe_path", "absolute path")
    parts = [part for part in unified.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _Refused("archive_unsafe_path", "path climbs out with '..' (zip-slip)")
    if not parts:
        raise _Refused("archive_unsafe_path", "empty name")
    if any(part.endswith("!") for part in parts):
        raise _Refused("archive_unsafe_path", "a name ending in '!' is reserved for nesting")
    return parts


def _write_member(
    source: IO[bytes], dest: Path, member: _Member, budget: _Budget, label: str
) -> None:
    quotas = budget.quotas
    if budget.files + 1 > quotas.max_files:
        raise _Refused("archive_file_count", f"more than {quotas.max_files} files")
    parent = _make_dirs(dest, member.parts[:-1])
    target = parent / member.parts[-1]
    written = 0
    with _create(target) as out:
        while block := _read(source, out, target):
            written += len(block)
            grown = member.inflated + written
            if grown > _RATIO_FLOOR and grown / member.ratio_base > quotas.max_ratio:
                _discard(out, target)
                raise _Refused("archive_ratio", _ratio_text(grown, member.ratio_base))
            if budget.total_bytes + written > quotas.max_total_bytes:
                _discard(out, target)
                raise _Refused("archive_total_size", f"more than {quotas.max_total_bytes} bytes")
            out.write(block)
    budget.total_bytes += written
    budget.files += 1
    logger.debug("extracted %s (%d bytes)", label, written)


@contextmanager
def _create(target: Path) -> Iterator[IO[bytes]]:
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError as exc:
        raise _Refused("archive_duplicate", "the archive holds this name twice") from exc
    except OSError as exc:
        raise _Refused("archive_unsafe_path", f"cannot create: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as out:
        yield out


def _read(source: IO[bytes], out: IO[bytes], target: Path) -> bytes:
    """The next block of a member; a damaged one (bad CRC, truncated) is refused alone."""
    try:
        return source.read(_READ)
    except (zipfile.BadZipFile, zlib.error, EOFError, tarfile.TarError, OSError) as exc:
        _discard(out, target)
        raise _Refused("archive_corrupt", str(exc)[:200]) from exc


def _discard(out: IO[bytes], target: Path) -> None:
    out.truncate(0)
    target.unlink()


def _make_dirs(dest: Path, parts: list[str]) -> Path:
    current = dest
    for part in parts:
        current = current / part
        try:
            current.mkdir()
        except FileExistsError as exc:
            if current.is_symlink() or not current.is_dir():
                raise _Refused("archive_unsafe_path", f"{part!r} is a file and a folder") from exc
    return current


def _ratio_text(size: int, packed: int) -> str:
    return f"inflates {size} bytes from {packed} (ratio {size / max(packed, 1):.0f})"
