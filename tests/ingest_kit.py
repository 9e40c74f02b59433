"""A deterministic hashing embedder and chunk builders for index tests.

Shared by tests/unit/ingest and tests/integration/ingest. The hashing embedder is only
for tests that must not load torch; quality and end-to-end tests use the real model.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from aifr.ingest import Chunk, FileEntry
from aifr.ingest.search import tokenize


class HashingEmbedder:
    """Bag of hashed tokens, normalized: texts sharing words get close vectors."""

    model_id = "test/hashing-64"
    dimension = 64

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = []
        for text in texts:
            vector = [0.0] * self.dimension
            for token in tokenize(text) or ["empty"]:
                digest = hashlib.sha256(token.encode()).digest()
                vector[digest[0] % self.dimension] += 1.0 if digest[1] % 2 else -1.0
            norm = math.sqrt(sum(x * x for x in vector)) or 1.0
            vectors.append([x / norm for x in vector])
        return vectors


def chunk(repo: str, path: str, text: str, start: int = 1) -> Chunk:
    """One chunk of ``text`` at ``path`` starting at line ``start``."""
    return Chunk(
        repo=repo,
        path=path,
        start_line=start,
        end_line=start + text.count("\n"),
        language="python" if path.endswith(".py") else "text",
        text=text,
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
    )


def entry(repo: str, path: str, *texts: str) -> FileEntry:
    """The manifest entry of a file made of ``texts``."""
    return FileEntry(repo, path, hashlib.sha256("".join(texts).encode()).hexdigest())
