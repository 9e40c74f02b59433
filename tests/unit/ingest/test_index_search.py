"""Tokenizer, BM25, the HNSW vector index and reciprocal rank fusion, in memory."""

from __future__ import annotations

import numpy as np

from aifr.ingest.search import HybridSearcher, KeywordIndex, VectorIndex, Weights, fuse, tokenize


def test_identifiers_yield_their_camel_and_snake_parts_and_themselves() -> None:
    tokens = tokenize("def getModelPath(): return load_http_client(URLPattern)")
    for expected in ("get", "model", "path", "getmodelpath", "load", "http", "client", "url"):
        assert expected in tokens
    assert "the" not in tokenize("the path of the file")


def test_a_row_in_both_lists_outranks_rows_in_one() -> None:
    fused = fuse([1, 2, 3], [3, 4, 5])
    assert fused[0].row_id == 3
    assert (fused[0].vector_rank, fused[0].keyword_rank) == (3, 1)


def test_fusion_weights_decide_which_list_leads() -> None:
    assert fuse([1], [2], vector_weight=2.0)[0].row_id == 1
    assert fuse([1], [2], keyword_weight=2.0)[0].row_id == 2


def test_bm25_ranks_the_document_with_the_rare_words_first() -> None:
    index = KeywordIndex(
        [10, 11, 12],
        ["retry with exponential backoff", "open the database", "the database and the backoff"],
    )
    hits = index.search(tokenize("exponential backoff"), 10)
    assert hits[0][0] == 10
    assert index.search(tokenize("nothing matches here"), 10) == []


def test_the_vector_graph_survives_a_dump_and_restore() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((200, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex(16)
    index.add(list(range(100, 300)), vectors)
    restored = VectorIndex.restore(index.dump(), 16)
    assert restored is not None
    assert restored.search(vectors[5], 1)[0][0] == 105
    assert VectorIndex.restore(b"not a graph", 16) is None


def test_removed_rows_are_never_returned() -> None:
    searcher = HybridSearcher(4, Weights(depth=10))
    eye = np.eye(4, dtype=np.float32)
    searcher.add("r", [1, 2], ["alpha text", "beta text"], eye[:2])
    searcher.remove("r", [1])
    found = searcher.search("alpha", eye[0].tolist(), ["r"], 5)
    assert [f.row_id for f in found] == [2]


def test_a_search_reads_only_the_repositories_it_is_given() -> None:
    searcher = HybridSearcher(4)
    eye = np.eye(4, dtype=np.float32)
    searcher.add("public", [1], ["payroll export"], eye[:1])
    searcher.add("hr", [2], ["payroll export"], eye[:1])
    found = searcher.search("payroll", eye[0].tolist(), ["public"], 5)
    assert [f.row_id for f in found] == [1]
