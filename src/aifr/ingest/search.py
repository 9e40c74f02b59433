"""Hybrid search in memory: an HNSW vector index and BM25 per repository, fused by RRF.

The index file holds only sealed rows (see :mod:`aifr.ingest.crypt`), so nothing here
is ever written in the clear: the structures are built from decrypted rows when the
index opens. Vector search uses usearch (HNSW); its graph is saved sealed beside the
rows so that opening a large index does not rebuild it. BM25 uses bm25s over a
tokenizer that splits code identifiers (``getModelPath`` and ``get_model_path`` both
give ``get``, ``model``, ``path``); it is rebuilt for a repository the first time it is
searched after a change. Results from several repositories are merged per signal
(cosine similarity, BM25 score) before reciprocal rank fusion, so a repository never
wins a place only because its own list was short.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import bm25s
import numpy as np
from numpy.typing import NDArray
from usearch.index import Index

__all__ = [
    "Fused",
    "HybridSearcher",
    "KeywordIndex",
    "VectorIndex",
    "Weights",
    "fuse",
    "tokenize",
]

_EXPANSION_SEARCH = 128
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*|[0-9]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "the",
        "this",
        "to",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "with",
        "does",
        "do",
        "can",
        "self",
    ]
)


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens; an identifier also yields its camelCase and snake_case parts."""
    tokens: list[str] = []
    for word in _WORD.findall(text):
        lower = word.lower()
        parts = _CAMEL.findall(word)
        if len(parts) > 1:
            tokens.extend(p.lower() for p in parts if len(p) > 1 and p.lower() not in _STOP)
        if len(lower) > 1 and lower not in _STOP:
            tokens.append(lower)
    return tokens


class VectorIndex:
    """Approximate nearest neighbours by cosine similarity (usearch HNSW), keyed by row id."""

    def __init__(self, dimension: int, *, graph: Index | None = None) -> None:
        self.dimension = dimension
        self._index = graph or Index(
            ndim=dimension, metric="cos", dtype="f16", expansion_search=_EXPANSION_SEARCH
        )

    @classmethod
    def restore(cls, data: bytes, dimension: int) -> VectorIndex | None:
        """An index from the bytes :meth:`dump` returned (``None``: not such bytes)."""
        try:
            graph = Index.restore(bytearray(data), expansion_search=_EXPANSION_SEARCH)
        except (ValueError, RuntimeError):
            return None
        if graph is None or graph.ndim != dimension:
            return None
        return cls(dimension, graph=graph)

    def __len__(self) -> int:
        return len(self._index)

    def dump(self) -> bytes:
        """The whole graph as bytes (to be sealed before it is written)."""
        return bytes(self._index.save() or b"")

    def add(self, ids: Sequence[int], vectors: NDArray[np.float32]) -> None:
        """Add ``vectors`` under ``ids``."""
        if ids:
            self._index.add(np.asarray(ids, dtype=np.uint64), vectors)

    def remove(self, ids: Iterable[int]) -> None:
        """Drop ``ids`` (unknown ids are ignored)."""
        keys = np.asarray(list(ids), dtype=np.uint64)
        if keys.size:
            self._index.remove(keys)

    def search(self, vector: NDArray[np.float32], n: int) -> list[tuple[int, float]]:
        """Up to ``n`` (row id, cosine similarity) pairs, best first."""
        if len(self._index) == 0:
            return []
        # One query needs one thread; a pool's spinning workers would slow what runs next.
        matches = self._index.search(vector, min(n, len(self._index)), threads=1)
        return [
            (int(key), 1.0 - float(distance))
            for key, distance in zip(matches.keys, matches.distances, strict=True)
        ]


class KeywordIndex:
    """BM25 over one repository's chunks (bm25s, Lucene scoring)."""

    def __init__(self, ids: Sequence[int], texts: Sequence[str]) -> None:
        self._ids = np.asarray(ids, dtype=np.int64)
        self._model = _bm25()
        if ids:
            self._model.index([tokenize(text) for text in texts], show_progress=False)

    def __len__(self) -> int:
        return int(self._ids.size)

    def dump(self) -> bytes:
        """The scored index as bytes (``.npz``, no pickles), to be sealed before it is written."""
        buffer = io.BytesIO()
        scores = getattr(self._model, "scores", None) or {}
        vocab = json.dumps(getattr(self._model, "vocab_dict", None) or {}).encode()
        np.savez(
            buffer,
            ids=self._ids,
            data=np.asarray(scores.get("data", np.zeros(0, np.float32))),
            indices=np.asarray(scores.get("indices", np.zeros(0, np.int32))),
            indptr=np.asarray(scores.get("indptr", np.zeros(1, np.int32))),
            num_docs=np.asarray([scores.get("num_docs", 0)], dtype=np.int64),
            vocab=np.frombuffer(vocab, dtype=np.uint8),
        )
        return buffer.getvalue()

    @classmethod
    def restore(cls, data: bytes) -> KeywordIndex | None:
        """An index from the bytes :meth:`dump` returned (``None``: not such bytes)."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                ids = arrays["ids"].astype(np.int64)
                scores = {
                    "data": arrays["data"],
                    "indices": arrays["indices"],
                    "indptr": arrays["indptr"],
                    "num_docs": int(arrays["num_docs"][0]),
                }
                vocab = json.loads(arrays["vocab"].tobytes())
        except (ValueError, KeyError, OSError, IndexError):
            return None
        if not isinstance(vocab, dict):
            return None
        index = cls.__new__(cls)
        index._ids = ids
        index._model = _bm25()
        if ids.size:
            index._model.scores = scores
            index._model.vocab_dict = vocab
            index._model.unique_token_ids_set = set(vocab.values())
            index._model.nonoccurrence_array = None  # what index() leaves for Lucene scoring
        return index

    def search(self, tokens: Sequence[str], n: int) -> list[tuple[int, float]]:
        """Up to ``n`` (row id, BM25 score) pairs with a positive score, best first."""
        known = [t for t in tokens if t in self._model.vocab_dict] if self._ids.size else []
        if not known:
            return []
        scores = self._model.get_scores(known)
        n = min(n, scores.size)
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(self._ids[i]), float(scores[i])) for i in top if scores[i] > 0]


def _bm25() -> bm25s.BM25:
    # bm25s sets its logger to DEBUG when imported, which bypasses the CLI's log level.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s.BM25()


@dataclass(frozen=True, slots=True)
class Fused:
    """A row's fused score and the 1-based rank it had in each list (``None``: absent)."""

    row_id: int
    score: float
    vector_rank: int | None
    keyword_rank: int | None


def fuse(
    vector_ranked: Sequence[int],
    keyword_ranked: Sequence[int],
    *,
    rrf_k: float = 20.0,
    vector_weight: float = 1.0,
    keyword_weight: float = 1.0,
) -> list[Fused]:
    """Reciprocal rank fusion: ``sum(weight / (rrf_k + rank))`` over both lists, best first."""
    ranks: dict[int, list[int | None]] = {}
    for rank, row in enumerate(vector_ranked, 1):
        ranks.setdefault(row, [None, None])[0] = rank
    for rank, row in enumerate(keyword_ranked, 1):
        ranks.setdefault(row, [None, None])[1] = rank
    fused = []
    for row, (v, k) in ranks.items():
        score = (vector_weight / (rrf_k + v) if v else 0.0) + (
            keyword_weight / (rrf_k + k) if k else 0.0
        )
        fused.append(Fused(row, score, v, k))
    fused.sort(key=lambda f: (-f.score, f.row_id))
    return fused


@dataclass(frozen=True, slots=True)
class Weights:
    """The fusion's tunable knobs and how deep each list is read.

    ``rrf_k = 20`` and ``vector_weight = 2`` were chosen on the 48 httpx questions of the
    labelled set and checked on 34 held-out httpcore and h11 questions
    (docs/benchmarks.md): on the tuning set every ``rrf_k`` from 10 to 100 with a vector
    weight of 2 or 2.5 is within one question's change of the best cell.
    """

    rrf_k: float = 20.0
    vector_weight: float = 2.0
    keyword_weight: float = 1.0
    depth: int = 50


class HybridSearcher:
    """The per-repository vector and keyword indexes, searched together.

    A repository restored from saved indexes (:meth:`restore`) has no texts in memory:
    searching it needs none. Before rows are added to it or removed from it, the owner
    supplies its texts (:meth:`set_texts`), since its keyword index is then rebuilt.
    """

    def __init__(self, dimension: int, weights: Weights | None = None) -> None:
        self.dimension = dimension
        self.weights = weights or Weights()
        self.vectors: dict[str, VectorIndex] = {}
        self.texts: dict[str, dict[int, str]] = {}
        self._keywords: dict[str, KeywordIndex] = {}

    def restore(self, repo: str, vectors: VectorIndex, keywords: KeywordIndex) -> None:
        """Take ``repo``'s saved indexes as they are (its texts stay on disk)."""
        self.vectors[repo] = vectors
        self._keywords[repo] = keywords
        self.texts.pop(repo, None)

    def needs_texts(self, repo: str) -> bool:
        """Whether ``repo`` was restored without its texts (set them before changing it)."""
        return repo in self.vectors and repo not in self.texts

    def set_texts(self, repo: str, texts: dict[int, str]) -> None:
        """Give a restored ``repo`` its texts (row id to text)."""
        self.texts[repo] = texts

    def add(
        self, repo: str, ids: Sequence[int], texts: Sequence[str], vectors: NDArray[np.float32]
    ) -> None:
        """Add rows to ``repo`` (its keyword index is rebuilt at the next search)."""
        if self.needs_texts(repo):
            raise RuntimeError(f"{repo}: set_texts before changing a restored repository")
        self.vectors.setdefault(repo, VectorIndex(self.dimension)).add(ids, vectors)
        self.texts.setdefault(repo, {}).update(zip(ids, texts, strict=True))
        self._keywords.pop(repo, None)

    def remove(self, repo: str, ids: Sequence[int]) -> None:
        """Drop rows from ``repo``."""
        if not ids:
            return
        if self.needs_texts(repo):
            raise RuntimeError(f"{repo}: set_texts before changing a restored repository")
        if repo in self.vectors:
            self.vectors[repo].remove(ids)
        texts = self.texts.get(repo, {})
        for row in ids:
            texts.pop(row, None)
        self._keywords.pop(repo, None)

    def keywords(self, repo: str) -> KeywordIndex:
        """``repo``'s keyword index, built from its texts if a change dropped it."""
        index = self._keywords.get(repo)
        if index is None:
            texts = self.texts.get(repo, {})
            index = KeywordIndex(list(texts), list(texts.values()))
            self._keywords[repo] = index
        return index

    def search(
        self, query: str, vector: Sequence[float], repos: Sequence[str], k: int
    ) -> list[Fused]:
        """The best ``k`` rows over ``repos`` by fused rank."""
        depth = max(self.weights.depth, k)
        query_vector = np.asarray(vector, dtype=np.float32)
        tokens = tokenize(query)
        by_similarity: list[tuple[int, float]] = []
        by_keyword: list[tuple[int, float]] = []
        for repo in repos:
            if repo in self.vectors:
                by_similarity += self.vectors[repo].search(query_vector, depth)
            if tokens and (repo in self._keywords or self.texts.get(repo)):
                by_keyword += self.keywords(repo).search(tokens, depth)
        by_similarity.sort(key=lambda pair: -pair[1])
        by_keyword.sort(key=lambda pair: -pair[1])
        w = self.weights
        fused = fuse(
            [row for row, _ in by_similarity[:depth]],
            [row for row, _ in by_keyword[:depth]],
            rrf_k=w.rrf_k,
            vector_weight=w.vector_weight,
            keyword_weight=w.keyword_weight,
        )
        return fused[:k]
