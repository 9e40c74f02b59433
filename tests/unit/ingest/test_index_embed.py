"""The local MiniLM embedder: offline, unit vectors, and a clear error without the extra."""

from __future__ import annotations

import math
import sys

import pytest

from aifr.errors import ConfigError, ErrorCode
from aifr.ingest import MiniLmEmbedder


def test_without_torch_the_embedder_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # as if the embed extra were absent
    with pytest.raises(ConfigError) as caught:
        MiniLmEmbedder().embed(["text"])
    assert caught.value.code is ErrorCode.CONFIG_MISSING_EXTRA
    assert "aifr[embed]" in caught.value.message


def test_no_texts_need_no_model() -> None:
    assert MiniLmEmbedder().embed([]) == []


@pytest.mark.slow
def test_the_packaged_model_gives_unit_vectors_that_place_related_texts_closer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embedder = MiniLmEmbedder(batch_size=2)
    texts = ["open a database connection", "connect to the sqlite db", "bake a chocolate cake"]
    vectors = embedder.embed(texts)
    assert [len(v) for v in vectors] == [embedder.dimension] * 3 == [384] * 3
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert embedder.embed(texts[:1])[0] == pytest.approx(vectors[0], abs=1e-5)
