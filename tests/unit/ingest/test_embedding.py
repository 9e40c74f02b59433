"""EmbeddingGenerator: batches, one embedding per distinct text, answers checked."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from aifr.errors import ErrorCode, IngestError
from aifr.ingest.chunk import content_hash
from aifr.ingest.embedding import EmbeddingGenerator
from aifr.ingest.ports import Chunk
from pipeline_kit import CountingEmbedder


def _chunk(text: str, line: int = 1) -> Chunk:
    return Chunk("r", "a.py", line, line, "python", text, content_hash(text))


class _RecordingEmbedder(CountingEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(len(texts))
        return super().embed(texts)


def test_each_distinct_text_is_embedded_once_and_every_chunk_gets_its_vector() -> None:
    embedder = _RecordingEmbedder()
    chunks = [_chunk("x = 1\n", 1), _chunk("y = 2\n", 2), _chunk("x = 1\n", 3)]
    vectors = EmbeddingGenerator(embedder).vectors(chunks)
    assert sorted(embedder.texts) == ["x = 1\n", "y = 2\n"]
    assert vectors[0] == vectors[2] != vectors[1]


def test_texts_go_to_the_model_in_batches_of_the_configured_size() -> None:
    embedder = _RecordingEmbedder()
    EmbeddingGenerator(embedder, batch_size=4).vectors(
        [_chunk(f"v{i} = {i}\n", i) for i in range(10)]
    )
    assert embedder.calls == [4, 4, 2]


class _ShortEmbedder(CountingEmbedder):
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return super().embed(texts)[:-1]


class _WrongDimension(CountingEmbedder):
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [v[:-1] for v in super().embed(texts)]


@pytest.mark.parametrize("embedder", [_ShortEmbedder(), _WrongDimension()])
def test_a_model_answering_the_wrong_shape_fails_with_an_ingest_error(
    embedder: CountingEmbedder,
) -> None:
    with pytest.raises(IngestError) as caught:
        EmbeddingGenerator(embedder).vectors([_chunk("a = 1\n"), _chunk("b = 2\n")])
    assert caught.value.code == ErrorCode.INGEST_FAILED
    assert caught.value.details["model"] == embedder.model_id


def test_texts_reach_the_model_longest_first_so_a_batch_pads_little() -> None:
    embedder = _RecordingEmbedder()
    texts = ["b = 22\n", "a = 1\n", "ccc = 333\n", "d = 4\n"]
    EmbeddingGenerator(embedder, batch_size=2).vectors([_chunk(t, i) for i, t in enumerate(texts)])
    assert embedder.texts == ["ccc = 333\n", "b = 22\n", "a = 1\n", "d = 4\n"]
    assert embedder.calls == [2, 2]
