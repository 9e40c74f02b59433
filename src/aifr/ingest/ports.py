"""What ingestion needs from an embedder and from the index that stores chunks.

The pipeline (enumerate -> sanitize -> plan chunks -> embed -> store) sees only these
protocols: the model behind :class:`Embedder` and the storage behind :class:`ChunkIndex`
can be swapped (the real local model, or a hashing embedder in unit tests; the encrypted
SQLite index now, another store later) without the planner or the router noticing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Chunk", "ChunkIndex", "Embedder", "FileEntry", "SearchHit"]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One sanitized, deterministic piece of a file, as planned by the chunk planner.

    ``text`` is already sanitized: no secret ever reaches a :class:`Chunk`.
    ``content_hash`` is the SHA-256 hex digest of ``text``, so the same text always
    yields the same chunk identity and a re-ingest can skip what it already embedded.
    """

    repo: str
    path: str
    start_line: int
    end_line: int
    language: str
    text: str
    content_hash: str


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A file as the manifest remembers it: its path in the repository and content hash.

    ``content_hash`` is the SHA-256 hex digest of the file's bytes on disk. ``size`` and
    ``mtime_ns`` are its ``stat`` when it was read: a re-ingest that finds both unchanged
    skips the file without opening it (the fast path that makes a no-change re-ingest of
    10,000 files take well under 2 s). A member of an archive has the path
    ``archive.zip!/member`` and the archive's ``stat``.
    """

    repo: str
    path: str
    content_hash: str
    size: int = 0
    mtime_ns: int = 0


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One result of a search: the chunk, its fused score and the ranks that made it."""

    chunk: Chunk
    score: float
    vector_rank: int | None
    keyword_rank: int | None


class Embedder(Protocol):
    """Turns texts into unit-length vectors of a fixed dimension, in batches."""

    @property
    def model_id(self) -> str:
        """A stable name of the model and its version; vectors of two ids never mix."""
        ...

    @property
    def dimension(self) -> int:
        """The length of every vector this embedder returns."""
        ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One normalized vector per text, in order."""
        ...


class ChunkIndex(Protocol):
    """Stores chunks with their vectors, per repository, and searches them."""

    def repos(self) -> list[str]:
        """The names of the repositories that hold at least one file, sorted."""
        ...

    def files(self, repo: str) -> dict[str, FileEntry]:
        """The manifest of ``repo``: every indexed file by path."""
        ...

    def replace_file(
        self, entry: FileEntry, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]
    ) -> None:
        """Atomically make ``chunks`` (with their vectors) the whole content of one file."""
        ...

    def touch_files(self, entries: Sequence[FileEntry]) -> None:
        """Record new ``size``/``mtime_ns`` of indexed files whose content hash is unchanged.

        No chunk or vector changes; a path that is not indexed is ignored.
        """
        ...

    def remove_files(self, repo: str, paths: Iterable[str]) -> None:
        """Drop the files at ``paths`` and all their chunks from ``repo``."""
        ...

    def search(
        self, query: str, query_vector: Sequence[float], *, repos: Sequence[str], k: int
    ) -> list[SearchHit]:
        """The best ``k`` chunks over ``repos``, by hybrid (vector and keyword) rank."""
        ...
