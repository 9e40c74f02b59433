"""Reading one untrusted file into sanitized chunks: the work the sandbox isolates.

:func:`parse_file` reads the bytes, refuses binaries, decodes, sanitizes and plans
chunks. It runs in the caller's process when the sandbox is off and in a limited child
(:mod:`aifr.ingest.worker`) when it is on; both give the same :class:`ParsedFile`, which
travels between them as JSON (:func:`parsed_to_json` / :func:`parsed_from_json`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import JsonValue

from aifr.ingest.chunk import ChunkLimits, ChunkPlanner
from aifr.ingest.enumerate import Skipped, is_binary
from aifr.ingest.ports import Chunk
from aifr.ingest.sanitize import Sanitizer

__all__ = [
    "ParsedFile",
    "limits_from_json",
    "limits_to_json",
    "parse_file",
    "parsed_from_json",
    "parsed_to_json",
]


@dataclass(frozen=True, slots=True)
class ParsedFile:
    """One file read: the hash of its bytes, its sanitized chunks and the secrets found."""

    path: str
    content_hash: str
    chunks: list[Chunk]
    redactions: Mapping[str, int] = field(default_factory=dict)


def parse_file(
    repo: str,
    path: str,
    absolute: Path,
    *,
    planner: ChunkPlanner,
    sanitizer: Sanitizer,
    max_bytes: int,
) -> ParsedFile | Skipped:
    """Read ``absolute`` (shown as ``path``) into sanitized chunks, or say why not."""
    try:
        with absolute.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        return Skipped(path, "unreadable", exc.strerror or "")
    if len(data) > max_bytes:
        return Skipped(path, "too_large", f"more than {max_bytes} bytes")
    if is_binary(data):
        return Skipped(path, "binary", "holds a NUL byte")
    digest = hashlib.sha256(data).hexdigest()
    text = data.decode("utf-8", errors="replace")
    clean = sanitizer.sanitize(text, filename=path.rsplit("!/", 1)[-1])
    chunks = planner.plan(repo, path, clean.text)
    return ParsedFile(path, digest, chunks, clean.counts)


def parsed_to_json(item: ParsedFile | Skipped) -> dict[str, JsonValue]:
    """A parse result as plain JSON for the pipe out of the sandbox."""
    if isinstance(item, Skipped):
        return {"skipped": {"path": item.path, "reason": item.reason, "detail": item.detail}}
    return {
        "path": item.path,
        "content_hash": item.content_hash,
        "redactions": dict(item.redactions),
        "chunks": [
            [c.start_line, c.end_line, c.language, c.text, c.content_hash] for c in item.chunks
        ],
    }


def parsed_from_json(repo: str, raw: Mapping[str, object]) -> ParsedFile | Skipped:
    """The inverse of :func:`parsed_to_json` (``raw`` comes from our own worker)."""
    skipped = raw.get("skipped")
    if isinstance(skipped, dict):
        return Skipped(str(skipped["path"]), str(skipped["reason"]), str(skipped["detail"]))
    path = str(raw["path"])
    rows = raw["chunks"]
    counts = raw["redactions"]
    assert isinstance(rows, list) and isinstance(counts, dict)  # noqa: S101  # our own JSON
    chunks = [
        Chunk(repo, path, int(s), int(e), str(lang), str(text), str(h))
        for s, e, lang, text, h in rows
    ]
    return ParsedFile(
        path, str(raw["content_hash"]), chunks, {str(k): int(v) for k, v in counts.items()}
    )


def limits_to_json(limits: ChunkLimits) -> dict[str, JsonValue]:
    """Chunk limits as JSON, so the worker plans exactly as the parent would."""
    return {
        "target_lines": limits.target_lines,
        "max_lines": limits.max_lines,
        "max_chars": limits.max_chars,
        "overlap_lines": limits.overlap_lines,
    }


def limits_from_json(raw: Mapping[str, object]) -> ChunkLimits:
    """The inverse of :func:`limits_to_json`."""
    return ChunkLimits(
        target_lines=int(str(raw["target_lines"])),
        max_lines=int(str(raw["max_lines"])),
        max_chars=int(str(raw["max_chars"])),
        overlap_lines=int(str(raw["overlap_lines"])),
    )
