"""Test doubles for the ingestion pipeline's ports: an in-memory index, a hashing embedder.

They stand in for the encrypted index and the real model only in the pipeline's unit and
integration tests, which are about what reaches the index, not about search quality.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import replace

from aifr.ingest import Chunk, FileEntry, SearchHit


class CountingEmbedder:
    """Hashes words into a small vector; counts every text it is asked to embed."""

    model_id = "test-hashing-16"
    dimension = 16

    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.texts.extend(texts)
        out: list[list[float]] = []
        for text in texts:
            vector = [0.0] * self.dimension
            for word in text.split():
                vector[hashlib.sha256(word.encode()).digest()[0] % self.dimension] += 1.0
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            out.append([v / norm for v in vector])
        return out


class MemoryChunkIndex:
    """Keeps files, chunks and vectors in dictionaries; searches by word overlap."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], FileEntry] = {}
        self.chunks: dict[tuple[str, str], list[Chunk]] = {}
        self.vectors: dict[tuple[str, str], list[list[float]]] = {}
        self.replaced: list[str] = []
        self.touched: list[str] = []

    def files(self, repo: str) -> dict[str, FileEntry]:
        return {path: entry for (r, path), entry in self.entries.items() if r == repo}

    def replace_file(
        self, entry: FileEntry, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]
    ) -> None:
        assert len(chunks) == len(vectors)
        key = (entry.repo, entry.path)
        self.entries[key] = entry
        self.chunks[key] = list(chunks)
        self.vectors[key] = [list(v) for v in vectors]
        self.replaced.append(entry.path)

    def touch_files(self, entries: Sequence[FileEntry]) -> None:
        for entry in entries:
            key = (entry.repo, entry.path)
            if key in self.entries:
                self.entries[key] = replace(
                    self.entries[key], size=entry.size, mtime_ns=entry.mtime_ns
                )
                self.touched.append(entry.path)

    def remove_files(self, repo: str, paths: Iterable[str]) -> None:
        for path in paths:
            self.entries.pop((repo, path), None)
            self.chunks.pop((repo, path), None)
            self.vectors.pop((repo, path), None)

    def search(
        self, query: str, query_vector: Sequence[float], *, repos: Sequence[str], k: int
    ) -> list[SearchHit]:
        words = set(query.lower().split())
        scored = [
            (len(words & set(chunk.text.lower().split())), chunk)
            for (repo, _), chunks in sorted(self.chunks.items())
            if repo in repos
            for chunk in chunks
        ]
        scored = [item for item in scored if item[0] > 0]
        scored.sort(key=lambda item: -item[0])
        return [
            SearchHit(chunk, float(score), None, rank)
            for rank, (score, chunk) in enumerate(scored[:k], 1)
        ]

    def all_text(self) -> str:
        return "\n".join(c.text for chunks in self.chunks.values() for c in chunks)
