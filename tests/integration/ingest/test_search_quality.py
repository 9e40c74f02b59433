"""Retrieval quality with the real model over httpx's installed source: hybrid beats both.

The labelled set is in :mod:`httpx_queries`; the code is read from the virtual
environment at test time (nothing of it is copied into this repository), chunked by the
ChunkPlanner, embedded by all-MiniLM-L6-v2 and stored in the encrypted index. The
numbers printed here are the ones in docs/benchmarks.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from httpx_queries import QUERIES

from aifr.ingest import FileEntry, IndexKey, MiniLmEmbedder
from aifr.ingest.chunk import ChunkPlanner, content_hash
from aifr.ingest.search import Weights
from aifr.storage.sqlite.chunk_index import SqliteChunkIndex

pytestmark = pytest.mark.slow

SOURCE = Path(httpx.__file__).parent
REPO = "httpx"
MODES = {
    "vector": Weights(vector_weight=1.0, keyword_weight=0.0),
    "bm25": Weights(vector_weight=0.0, keyword_weight=1.0),
    "hybrid": Weights(),
}


@dataclass(frozen=True)
class Scores:
    recall_at_1: float
    recall_at_10: float
    mrr: float


@dataclass(frozen=True)
class Corpus:
    path: Path
    key: IndexKey
    embedder: MiniLmEmbedder
    vectors: list[list[float]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    embedder = MiniLmEmbedder()
    key = IndexKey(os.urandom(32), source="test")
    path = tmp_path_factory.mktemp("quality") / "index.db"
    planner = ChunkPlanner()
    with SqliteChunkIndex(path, key, model_id=embedder.model_id, dimension=384) as index:
        for file in sorted(SOURCE.rglob("*.py")):
            relative = file.relative_to(SOURCE).as_posix()
            text = file.read_text()
            chunks = planner.plan(REPO, relative, text)
            if chunks:
                entry = FileEntry(REPO, relative, content_hash(text))
                index.replace_file(entry, chunks, embedder.embed([c.text for c in chunks]))
    yield Corpus(path, key, embedder, embedder.embed([q for q, _ in QUERIES]))


def evaluate(corpus: Corpus, weights: Weights) -> Scores:
    hits = firsts = 0
    reciprocal = 0.0
    with SqliteChunkIndex(
        corpus.path, corpus.key, model_id=corpus.embedder.model_id, dimension=384, weights=weights
    ) as index:
        for (query, expected), vector in zip(QUERIES, corpus.vectors, strict=True):
            found = [h.chunk.path for h in index.search(query, vector, repos=[REPO], k=10)]
            ranks = [rank for rank, path in enumerate(found, 1) if path in expected]
            if ranks:
                hits += 1
                firsts += ranks[0] == 1
                reciprocal += 1.0 / ranks[0]
    total = len(QUERIES)
    return Scores(firsts / total, hits / total, reciprocal / total)


def test_the_labelled_set_has_forty_queries_over_files_that_exist() -> None:
    assert len(QUERIES) >= 40
    for _, expected in QUERIES:
        for path in expected:
            assert (SOURCE / path).is_file(), path


def test_hybrid_search_beats_vector_and_bm25_alone(corpus: Corpus) -> None:
    scores = {mode: evaluate(corpus, weights) for mode, weights in MODES.items()}
    for mode, score in scores.items():
        print(
            f"{mode:7s} recall@1 {score.recall_at_1:.3f}  recall@10 {score.recall_at_10:.3f}  "
            f"MRR {score.mrr:.3f}"
        )
    hybrid = scores["hybrid"]
    for alone in ("vector", "bm25"):
        assert hybrid.recall_at_10 >= scores[alone].recall_at_10, scores
        assert hybrid.mrr > scores[alone].mrr, scores
        assert hybrid.recall_at_1 > scores[alone].recall_at_1, scores
