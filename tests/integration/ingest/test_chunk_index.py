"""The encrypted SQLite chunk index: nothing in the clear, wrong keys refused, updates kept."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from aifr.errors import ErrorCode, IngestError, StorageError
from aifr.ingest import FileEntry, IndexKey
from aifr.storage.sqlite.chunk_index import SqliteChunkIndex
from ingest_kit import HashingEmbedder, chunk, entry

EMBEDDER = HashingEmbedder()
SECRET_TEXT = "def rotate_payroll_ledger(): return quarterly_bonus_table"


def _open(path: Path, key: IndexKey) -> SqliteChunkIndex:
    return SqliteChunkIndex(path, key, model_id=EMBEDDER.model_id, dimension=EMBEDDER.dimension)


def _put(index: SqliteChunkIndex, repo: str, path: str, *texts: str) -> None:
    chunks = [chunk(repo, path, text, start=1 + 10 * i) for i, text in enumerate(texts)]
    index.replace_file(entry(repo, path, *texts), chunks, EMBEDDER.embed(texts))


def _search(index: SqliteChunkIndex, query: str, repos: list[str], k: int = 5) -> list[str]:
    hits = index.search(query, EMBEDDER.embed([query])[0], repos=repos, k=k)
    return [f"{h.chunk.repo}:{h.chunk.path}:{h.chunk.start_line}" for h in hits]


@pytest.fixture
def key() -> IndexKey:
    return IndexKey(os.urandom(32), source="test")


def test_the_index_file_holds_no_text_path_or_repository_name_in_the_clear(
    tmp_path: Path, key: IndexKey
) -> None:
    with _open(tmp_path / "index.db", key) as index:
        _put(index, "hr-confidential", "payroll/rotate_ledger.py", SECRET_TEXT)
        assert _search(index, "payroll ledger", ["hr-confidential"])
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for clear in (
        b"rotate_payroll_ledger",
        b"quarterly_bonus",
        b"payroll/rotate",
        b"hr-confidential",
    ):
        assert clear not in raw


def test_what_was_indexed_is_found_again_after_reopening(tmp_path: Path, key: IndexKey) -> None:
    with _open(tmp_path / "index.db", key) as index:
        _put(
            index, "app", "net/retry.py", "retry with exponential backoff", "jitter added to delays"
        )
        _put(index, "app", "db/open.py", "open the sqlite database connection")
    with _open(tmp_path / "index.db", key) as index:
        assert _search(index, "exponential backoff", ["app"])[0] == "app:net/retry.py:1"
        assert _search(index, "sqlite database", ["app"])[0] == "app:db/open.py:1"
        assert set(index.files("app")) == {"net/retry.py", "db/open.py"}
        assert index.repos() == ["app"]


def test_a_wrong_key_is_refused_at_open_not_read_as_garbage(tmp_path: Path, key: IndexKey) -> None:
    with _open(tmp_path / "index.db", key) as index:
        _put(index, "app", "a.py", "alpha")
    with pytest.raises(IngestError) as caught:
        _open(tmp_path / "index.db", IndexKey(os.urandom(32), source="env"))
    assert caught.value.code is ErrorCode.INGEST_KEY_INVALID
    assert "env" in caught.value.message


def test_an_index_built_by_another_model_is_refused(tmp_path: Path, key: IndexKey) -> None:
    _open(tmp_path / "index.db", key).close()
    with pytest.raises(IngestError) as caught:
        SqliteChunkIndex(tmp_path / "index.db", key, model_id="other/model", dimension=64)
    assert caught.value.code is ErrorCode.INGEST_FAILED
    assert "test/hashing-64" in caught.value.message


def test_replacing_a_file_drops_its_old_chunks_and_removing_it_drops_all(
    tmp_path: Path, key: IndexKey
) -> None:
    with _open(tmp_path / "index.db", key) as index:
        _put(index, "app", "a.py", "zebra stripes pattern")
        _put(index, "app", "a.py", "giraffe neck length")
        assert _search(index, "zebra stripes", ["app"]) == ["app:a.py:1"]
        hit = index.search("giraffe", EMBEDDER.embed(["giraffe"])[0], repos=["app"], k=5)[0]
        assert hit.chunk.text == "giraffe neck length"
        assert hit.keyword_rank == 1
        index.remove_files("app", ["a.py"])
        assert _search(index, "giraffe", ["app"]) == []
        assert index.files("app") == {}
    with _open(tmp_path / "index.db", key) as index:
        assert _search(index, "giraffe", ["app"]) == []


def test_a_chunk_row_moved_onto_another_file_fails_authentication(
    tmp_path: Path, key: IndexKey
) -> None:
    with _open(tmp_path / "index.db", key) as index:
        _put(index, "app", "a.py", "alpha beta")
        _put(index, "app", "b.py", "gamma delta")
    with sqlite3.connect(tmp_path / "index.db") as conn:
        rows = conn.execute("SELECT row_id, sealed FROM index_chunks ORDER BY row_id").fetchall()
        conn.execute(
            "UPDATE index_chunks SET sealed = ? WHERE row_id = ?", (rows[0][1], rows[1][0])
        )
    conn.close()
    index = _open(tmp_path / "index.db", key)
    with pytest.raises(IngestError) as caught:
        _search(index, "gamma", ["app"])
    assert caught.value.code is ErrorCode.INGEST_INDEX_TAMPERED
    index.close()


def test_a_stale_graph_is_rebuilt_from_the_rows_instead_of_trusted(
    tmp_path: Path, key: IndexKey
) -> None:
    with _open(tmp_path / "index.db", key) as index:
        _put(index, "app", "a.py", "alpha beta")
    index = _open(tmp_path / "index.db", key)
    _put(index, "app", "b.py", "gamma delta")
    index._db.close()  # the process dies: the graph saved at the last close is now stale
    with _open(tmp_path / "index.db", key) as reopened:
        query = "gamma delta"
        hits = reopened.search(query, EMBEDDER.embed([query])[0], repos=["app"], k=5)
        assert (hits[0].chunk.path, hits[0].vector_rank) == ("b.py", 1)


def test_vectors_of_the_wrong_length_are_refused(tmp_path: Path, key: IndexKey) -> None:
    with _open(tmp_path / "index.db", key) as index, pytest.raises(IngestError):
        index.replace_file(entry("app", "a.py", "x"), [chunk("app", "a.py", "x")], [[0.1, 0.2]])


def test_an_unreadable_index_file_is_a_storage_error(tmp_path: Path, key: IndexKey) -> None:
    (tmp_path / "index.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError):
        _open(tmp_path / "index.db", key)


def test_touching_a_file_records_its_new_stat_and_keeps_its_chunks(
    tmp_path: Path, key: IndexKey
) -> None:
    with _open(tmp_path / "index.db", key) as index:
        _put(index, "app", "a.py", "alpha beta")
        old = index.files("app")["a.py"]
        index.touch_files([FileEntry("app", "a.py", old.content_hash, size=10, mtime_ns=123)])
        index.touch_files([FileEntry("app", "never-indexed.py", "0" * 64, size=1, mtime_ns=1)])
    with _open(tmp_path / "index.db", key) as index:
        assert index.files("app") == {"a.py": FileEntry("app", "a.py", old.content_hash, 10, 123)}
        assert _search(index, "alpha beta", ["app"]) == ["app:a.py:1"]


def test_a_long_lived_reader_sees_what_another_writer_added(tmp_path: Path, key: IndexKey) -> None:
    with _open(tmp_path / "index.db", key) as reader, _open(tmp_path / "index.db", key) as writer:
        _put(writer, "app", "a.py", "alpha beta")
        assert _search(reader, "alpha beta", ["app"]) == ["app:a.py:1"]
        _put(writer, "app", "b.py", "gamma delta")
        writer.remove_files("app", ["a.py"])
        assert _search(reader, "gamma delta", ["app"]) == ["app:b.py:1"]
        assert "app:a.py:1" not in _search(reader, "alpha beta", ["app"])


def test_reopening_restores_the_saved_indexes_without_decrypting_a_chunk_row(
    tmp_path: Path, key: IndexKey
) -> None:
    with _open(tmp_path / "index.db", key) as index:
        _put(index, "app", "net/retry.py", "retry with exponential backoff")
        _put(index, "app", "db/open.py", "open the sqlite database connection")
    with _open(tmp_path / "index.db", key) as index:
        assert _search(index, "exponential backoff", ["app"])[0] == "app:net/retry.py:1"
        # Searching took the sealed graph and BM25 index: no chunk text is in memory.
        assert index._load().needs_texts("app")
        # A write first decrypts the texts, since BM25 is rebuilt over all of them.
        _put(index, "app", "cache/lru.py", "least recently used cache eviction")
        assert not index._load().needs_texts("app")
        assert _search(index, "sqlite database", ["app"])[0] == "app:db/open.py:1"
        assert _search(index, "cache eviction", ["app"])[0] == "app:cache/lru.py:1"
    with _open(tmp_path / "index.db", key) as index:
        assert _search(index, "cache eviction", ["app"])[0] == "app:cache/lru.py:1"
        assert _search(index, "exponential backoff", ["app"])[0] == "app:net/retry.py:1"
        assert index._load().needs_texts("app")


def test_a_missing_or_tampered_keyword_index_is_rebuilt_or_refused(
    tmp_path: Path, key: IndexKey
) -> None:
    with _open(tmp_path / "index.db", key) as index:
        _put(index, "app", "a.py", "alpha beta")
        _put(index, "app", "b.py", "gamma delta")
    with sqlite3.connect(tmp_path / "index.db") as conn:
        sealed = conn.execute("SELECT sealed FROM index_keywords").fetchone()[0]
        conn.execute("DELETE FROM index_keywords")
    conn.close()
    with _open(tmp_path / "index.db", key) as index:  # no saved BM25: rebuilt from rows
        assert _search(index, "gamma", ["app"])[0] == "app:b.py:1"
        assert not index._load().needs_texts("app")
    with sqlite3.connect(tmp_path / "index.db") as conn:  # saved again at close
        assert conn.execute("SELECT COUNT(*) FROM index_keywords").fetchone()[0] == 1
        conn.execute(
            "UPDATE index_keywords SET sealed = ?", (sealed[:-1] + bytes([sealed[-1] ^ 1]),)
        )
    conn.close()
    index = _open(tmp_path / "index.db", key)
    with pytest.raises(IngestError) as caught:
        _search(index, "gamma", ["app"])
    assert caught.value.code is ErrorCode.INGEST_INDEX_TAMPERED
    index.close()
