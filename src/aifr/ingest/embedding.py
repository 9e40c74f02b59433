"""The EmbeddingGenerator: vectors for sanitized chunks, in batches, each distinct text once.

It stands between the pipeline and whatever :class:`Embedder` the application chose (the
local MiniLM model, or a test embedder): it cuts the work into batches the model takes
in one call, embeds a text that occurs in several chunks only once, and checks what
comes back (one vector per text, of the embedder's dimension), so a misbehaving model
fails the ingest with a clear error instead of storing vectors under the wrong chunks.
"""

from __future__ import annotations

from collections.abc import Sequence

from aifr.errors import IngestError
from aifr.ingest.ports import Chunk, Embedder

__all__ = ["EmbeddingGenerator"]


class EmbeddingGenerator:
    """Embeds chunks through ``embedder``, ``batch_size`` texts per call."""

    def __init__(self, embedder: Embedder, *, batch_size: int = 256) -> None:
        self.embedder = embedder
        self.batch_size = max(1, batch_size)

    def vectors(self, chunks: Sequence[Chunk]) -> list[list[float]]:
        """One vector per chunk, in order.

        Raises:
            IngestError: the embedder answered the wrong number of vectors, or vectors of
                the wrong length.
        """
        # Longest first, as sentence-transformers orders a call: each batch then holds
        # texts of about one length, so little of a forward pass is spent on padding.
        unique = sorted({chunk.text for chunk in chunks}, key=lambda text: (-len(text), text))
        found: dict[str, list[float]] = {}
        model, dimension = self.embedder.model_id, self.embedder.dimension
        for start in range(0, len(unique), self.batch_size):
            texts = unique[start : start + self.batch_size]
            answer = self.embedder.embed(texts)
            if len(answer) != len(texts):
                raise IngestError(
                    f"the embedder {model!r} answered {len(answer)} vectors for {len(texts)} texts",
                    model=model,
                )
            if any(len(vector) != dimension for vector in answer):
                raise IngestError(
                    f"the embedder {model!r} answered a vector whose length is not {dimension}",
                    model=model,
                )
            found.update(zip(texts, answer, strict=True))
        return [found[chunk.text] for chunk in chunks]
