"""Retrieval quality with the real model over httpx, httpcore and h11: hybrid beats both.

The labelled set is in :mod:`http_stack_queries`; the code is read from the virtual
environment at test time (nothing of it is copied into this repository), chunked by the
ChunkPlanner, embedded by all-MiniLM-L6-v2 and stored in the encrypted index as one
repository. The numbers printed here are the ones in docs/benchmarks.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h11
import httpcore
import httpx
import pytest
from http_stack_queries import HELD_OUT, HTTPX, QUERIES

from aifr.ingest import Chunk, FileEntry, IndexKey, MiniLmEmbedder
from aifr.ingest.chunk import ChunkPlanner, content_hash
from aifr.ingest.search import Weights
from aifr.storage.sqlite.chunk_index import SqliteChunkIndex

pytestmark = pytest.mark.slow

PACKAGES = (httpx, httpcore, h11)
SITE = Path(httpx.__file__).parent.parent
REPO = "http"
MODES = {
    "vector": Weights(vector_weight=1.0, keyword_weight=0.0),
    "bm25": Weights(vector_weight=0.0, keyword_weight=1.0),
    "hybrid": Weights(),  # the shipped defaults
}


@dataclass(frozen=True)
class Scores:
    recall_at_1: float
    recall_at_5: float
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
    embedder = MiniLmEmbedder(batch_size=64)
    key = IndexKey(os.urandom(32), source="test")
    path = tmp_path_factory.mktemp("quality") / "index.db"
    planner = ChunkPlanner()
    files: list[tuple[FileEntry, list[Chunk]]] = []
    for package in PACKAGES:
        source = Path(package.__file__).parent
        for file in sorted(source.rglob("*.py")):
            relative = f"{package.__name__}/{file.relative_to(source).as_posix()}"
            text = file.read_text()
            chunks = planner.plan(REPO, relative, text)
            if chunks:
                files.append((FileEntry(REPO, relative, content_hash(text)), chunks))
    # One call for every chunk: the model sorts them by length, so batches pad little.
    vectors = iter(embedder.embed([c.text for _, chunks in files for c in chunks]))
    with SqliteChunkIndex(path, key, model_id=embedder.model_id, dimension=384) as index:
        for entry, chunks in files:
            index.replace_file(entry, chunks, [next(vectors) for _ in chunks])
    yield Corpus(path, key, embedder, embedder.embed([q for q, _ in QUERIES]))


def evaluate(
    corpus: Corpus, weights: Weights, queries: Sequence[tuple[str, tuple[str, ...]]]
) -> Scores:
    firsts = fives = tens = 0
    reciprocal = 0.0
    by_query = dict(zip((q for q, _ in QUERIES), corpus.vectors, strict=True))
    with SqliteChunkIndex(
        corpus.path, corpus.key, model_id=corpus.embedder.model_id, dimension=384, weights=weights
    ) as index:
        for query, expected in queries:
            hits = index.search(query, by_query[query], repos=[REPO], k=10)
            ranks = [rank for rank, hit in enumerate(hits, 1) if hit.chunk.path in expected]
            if ranks:
                tens += 1
                fives += ranks[0] <= 5
                firsts += ranks[0] == 1
                reciprocal += 1.0 / ranks[0]
    total = len(queries)
    return Scores(firsts / total, fives / total, tens / total, reciprocal / total)


def test_the_labelled_set_has_forty_queries_over_files_that_exist() -> None:
    assert len(QUERIES) >= 40
    assert len({q for q, _ in QUERIES}) == len(QUERIES)
    for _, expected in QUERIES:
        for path in expected:
            assert (SITE / path).is_file(), path


def test_hybrid_search_beats_vector_and_bm25_alone(corpus: Corpus) -> None:
    scores = {
        (split, mode): evaluate(corpus, weights, queries)
        for split, queries in (("all", QUERIES), ("httpx", HTTPX), ("held-out", HELD_OUT))
        for mode, weights in MODES.items()
    }
    for (split, mode), score in scores.items():
        print(
            f"{split:8s} {mode:7s} recall@1 {score.recall_at_1:.3f}  recall@5 "
            f"{score.recall_at_5:.3f}  recall@10 {score.recall_at_10:.3f}  MRR {score.mrr:.3f}"
        )
    for split in ("all", "held-out"):
        hybrid = scores[split, "hybrid"]
        for alone in ("vector", "bm25"):
            other = scores[split, alone]
            assert hybrid.recall_at_10 > other.recall_at_10, (split, alone, scores)
            assert hybrid.mrr > other.mrr, (split, alone, scores)
            assert hybrid.recall_at_1 > other.recall_at_1, (split, alone, scores)
