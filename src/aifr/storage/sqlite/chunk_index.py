"""``SqliteChunkIndex``: the encrypted chunk index under ``.aifr/index/`` (a ChunkIndex).

The file holds sealed rows only (:mod:`aifr.ingest.crypt`): repository names, paths,
chunk text, metadata and vectors are AES-GCM ciphertext, and rows are found by keyed
hashes of repository and path. Searching needs plaintext, so the first search (or
write) decrypts every row into the in-memory :class:`~aifr.ingest.search.HybridSearcher`.
The HNSW graph of each repository is saved sealed on :meth:`close`, tagged with the
repository's generation; a graph older than its rows (a process that died before
closing) is rebuilt from the vectors instead of being trusted.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aifr.errors import ErrorCode, IngestError
from aifr.ingest import Chunk, FileEntry, IndexKey, SearchHit
from aifr.ingest.crypt import RowCipher
from aifr.ingest.search import HybridSearcher, KeywordIndex, VectorIndex, Weights
from aifr.storage.sqlite.database import Migration, SqliteDatabase, translate_sqlite_errors

__all__ = ["SqliteChunkIndex"]

_MIGRATIONS = [
    Migration(
        1,
        """
        CREATE TABLE index_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE index_repos (
            repo_id BLOB PRIMARY KEY, sealed BLOB NOT NULL, generation INTEGER NOT NULL
        );
        CREATE TABLE index_files (
            file_id BLOB PRIMARY KEY, repo_id BLOB NOT NULL, sealed BLOB NOT NULL
        );
        CREATE INDEX index_files_repo ON index_files(repo_id);
        CREATE TABLE index_chunks (
            row_id INTEGER PRIMARY KEY AUTOINCREMENT,
            file_id BLOB NOT NULL,
            ordinal INTEGER NOT NULL,
            repo_id BLOB NOT NULL,
            sealed BLOB NOT NULL,
            vector BLOB NOT NULL
        );
        CREATE INDEX index_chunks_file ON index_chunks(file_id);
        CREATE TABLE index_graphs (
            repo_id BLOB PRIMARY KEY, generation INTEGER NOT NULL, sealed BLOB NOT NULL
        )
        """,
    ),
    Migration(
        2,
        """
        CREATE TABLE index_keywords (
            repo_id BLOB PRIMARY KEY, generation INTEGER NOT NULL, sealed BLOB NOT NULL
        )
        """,
    ),
]


def _chunk_aad(file_id: bytes, ordinal: int) -> bytes:
    return file_id + ordinal.to_bytes(4, "big")


class SqliteChunkIndex:
    """Sealed chunks and vectors in one SQLite file, searched in memory.

    Args:
        path: the index database (``.aifr/index/index.db``).
        key: the index key; refused with ``ingest.key_invalid`` if the file was
            written under another key.
        model_id: the embedder's model id; an index built by another model is refused.
        dimension: the embedder's vector length.
        weights: the fusion's knobs.

    Raises:
        IngestError: wrong key, or an index built by another model.
        StorageError: the file cannot be opened.
    """

    def __init__(
        self,
        path: Path | str,
        key: IndexKey,
        *,
        model_id: str,
        dimension: int,
        weights: Weights | None = None,
    ) -> None:
        self.path = Path(path)
        self.model_id = model_id
        self.dimension = dimension
        self._cipher: RowCipher = key.cipher()
        self._db = SqliteDatabase(self.path, synchronous="NORMAL")
        self._db.migrate("index", _MIGRATIONS)
        self._lock = threading.RLock()
        self._weights = weights
        self._searcher: HybridSearcher | None = None
        self._loaded_at: list[tuple[bytes, int]] = []
        self._dirty: set[str] = set()
        self._check(key)

    # -- opening -----------------------------------------------------------------------

    def _check(self, key: IndexKey) -> None:
        conn = self._db.connect()
        with translate_sqlite_errors(f"reading {self.path}"):
            meta = {r["key"]: r["value"] for r in conn.execute("SELECT * FROM index_meta")}
        if not meta:
            with self._db.transaction() as tx:
                tx.executemany(
                    "INSERT INTO index_meta(key, value) VALUES (?, ?)",
                    [
                        ("key_check", key.check_value),
                        ("model_id", self.model_id),
                        ("dimension", str(self.dimension)),
                    ],
                )
            return
        if meta.get("key_check") != key.check_value:
            raise IngestError(
                f"the index key from {key.source} does not open {self.path}: it was "
                "written under another key",
                code=ErrorCode.INGEST_KEY_INVALID,
                source=key.source,
            )
        if meta.get("model_id") != self.model_id:
            raise IngestError(
                f"{self.path} was built by {meta.get('model_id')!r}, not {self.model_id!r}; "
                "delete the index and ingest again to switch models",
                model_id=meta.get("model_id"),
            )

    def _generations(self) -> list[tuple[bytes, int]]:
        with translate_sqlite_errors(f"reading {self.path}"):
            rows = self._db.connect().execute(
                "SELECT repo_id, generation FROM index_repos ORDER BY repo_id"
            )
            return [(bytes(r["repo_id"]), int(r["generation"])) for r in rows]

    def _load(self) -> HybridSearcher:
        """Decrypt every row into memory, again when another process changed the index.

        The caller holds the lock. A long-lived reader (``aifr mcp``) thus sees what a
        concurrent ``aifr ingest`` wrote at its next search.
        """
        generations = self._generations()
        if self._searcher is not None and generations == self._loaded_at:
            return self._searcher
        self._dirty.clear()
        self._loaded_at = generations
        searcher = HybridSearcher(self.dimension, self._weights)
        conn = self._db.connect()
        with translate_sqlite_errors(f"reading {self.path}"):
            repos = conn.execute("SELECT repo_id, sealed, generation FROM index_repos").fetchall()
            for repo_row in repos:
                repo_id = bytes(repo_row["repo_id"])
                generation = int(repo_row["generation"])
                name = self._cipher.open("repos", repo_id, repo_row["sealed"]).decode()
                if not self._restore_repo(searcher, name, repo_id, generation):
                    self._load_repo(searcher, name, repo_id)
        self._searcher = searcher
        return searcher

    def _saved(self, table: str, repo_id: bytes, generation: int) -> bytes | None:
        """The sealed index saved for ``repo_id`` at ``generation``, opened (``None``: none)."""
        row = (
            self._db.connect()
            .execute(
                f"SELECT generation, sealed FROM {table} WHERE repo_id = ?",  # noqa: S608  # a fixed table name
                (repo_id,),
            )
            .fetchone()
        )
        if row is None or int(row["generation"]) != generation:
            return None
        return self._cipher.open(table[6:], repo_id + generation.to_bytes(8, "big"), row["sealed"])

    def _restore_repo(
        self, searcher: HybridSearcher, name: str, repo_id: bytes, generation: int
    ) -> bool:
        """Take a repository's saved graph and keyword index when both match its rows.

        No chunk row is decrypted: opening a large index costs two decryptions per
        repository. A copy older than the rows (a process that died before closing) is
        not trusted; the caller rebuilds from the rows instead.
        """
        graph = self._saved("index_graphs", repo_id, generation)
        words = self._saved("index_keywords", repo_id, generation)
        if graph is None or words is None:
            return False
        count = (
            self._db.connect()
            .execute("SELECT COUNT(*) FROM index_chunks WHERE repo_id = ?", (repo_id,))
            .fetchone()[0]
        )
        vectors = VectorIndex.restore(graph, self.dimension)
        keywords = KeywordIndex.restore(words)
        if vectors is None or keywords is None or not len(vectors) == len(keywords) == count:
            return False
        searcher.restore(name, vectors, keywords)
        return True

    def _rows(self, repo_id: bytes, *, vectors: bool) -> list[sqlite3.Row]:
        columns = "row_id, file_id, ordinal, sealed" + (", vector" if vectors else "")
        with translate_sqlite_errors(f"reading {self.path}"):
            return (
                self._db.connect()
                .execute(
                    f"SELECT {columns} FROM index_chunks WHERE repo_id = ?",  # noqa: S608  # fixed column names
                    (repo_id,),
                )
                .fetchall()
            )

    def _texts(self, rows: Sequence[sqlite3.Row]) -> dict[int, str]:
        texts = {}
        for row in rows:
            aad = _chunk_aad(bytes(row["file_id"]), row["ordinal"])
            texts[row["row_id"]] = json.loads(self._cipher.open("chunks", aad, row["sealed"]))[
                "text"
            ]
        return texts

    def _load_repo(self, searcher: HybridSearcher, name: str, repo_id: bytes) -> None:
        """Rebuild a repository's indexes from its decrypted rows (saved again on close)."""
        rows = self._rows(repo_id, vectors=True)
        texts = self._texts(rows)
        vectors = [
            self._cipher.open(
                "vectors", _chunk_aad(bytes(row["file_id"]), row["ordinal"]), row["vector"]
            )
            for row in rows
        ]
        matrix = np.frombuffer(b"".join(vectors), dtype=np.float32).reshape(-1, self.dimension)
        searcher.add(name, list(texts), list(texts.values()), matrix)
        self._dirty.add(name)

    def _writable(self, repo: str) -> HybridSearcher:
        """The searcher, with ``repo``'s texts in memory (decrypted if it was restored)."""
        searcher = self._load()
        if searcher.needs_texts(repo):
            rows = self._rows(self._cipher.name("repo", repo), vectors=False)
            searcher.set_texts(repo, self._texts(rows))
        return searcher

    # -- ChunkIndex --------------------------------------------------------------------

    def repos(self) -> list[str]:
        """The names of the repositories in the index, sorted."""
        with self._lock, translate_sqlite_errors(f"reading {self.path}"):
            rows = self._db.connect().execute("SELECT repo_id, sealed FROM index_repos")
            return sorted(
                self._cipher.open("repos", bytes(r["repo_id"]), r["sealed"]).decode() for r in rows
            )

    def files(self, repo: str) -> dict[str, FileEntry]:
        """The manifest of ``repo``: every indexed file by path."""
        repo_id = self._cipher.name("repo", repo)
        with self._lock, translate_sqlite_errors(f"reading {self.path}"):
            rows = self._db.connect().execute(
                "SELECT file_id, sealed FROM index_files WHERE repo_id = ?", (repo_id,)
            )
            entries = [
                json.loads(self._cipher.open("files", bytes(r["file_id"]), r["sealed"]))
                for r in rows
            ]
        return {
            e["path"]: FileEntry(
                repo, e["path"], e["content_hash"], e.get("size", 0), e.get("mtime_ns", 0)
            )
            for e in entries
        }

    def replace_file(
        self, entry: FileEntry, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]
    ) -> None:
        """Atomically make ``chunks`` (with their vectors) the whole content of one file.

        Raises:
            IngestError: a vector has the wrong length, or a chunk names another file.
        """
        if len(chunks) != len(vectors) or any(len(v) != self.dimension for v in vectors):
            raise IngestError(
                f"{entry.path}: expected one {self.dimension}-dimension vector per chunk",
                path=entry.path,
            )
        if any((c.repo, c.path) != (entry.repo, entry.path) for c in chunks):
            raise IngestError(f"{entry.path}: a chunk names another file", path=entry.path)
        matrix = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dimension)
        with self._lock:
            searcher = self._writable(entry.repo)
            repo_id, file_id = self._ids(entry.repo, entry.path)
            with self._db.transaction() as tx:
                self._ensure_repo(tx, entry.repo, repo_id)
                old = self._delete_file(tx, file_id)
                sealed = self._cipher.seal("files", file_id, _file_record(entry))
                tx.execute(
                    "INSERT INTO index_files(file_id, repo_id, sealed) VALUES (?, ?, ?)",
                    (file_id, repo_id, sealed),
                )
                new = [
                    self._insert_chunk(tx, file_id, repo_id, ordinal, chunk, matrix[ordinal])
                    for ordinal, chunk in enumerate(chunks)
                ]
            searcher.remove(entry.repo, old)
            searcher.add(entry.repo, new, [c.text for c in chunks], matrix)
            self._dirty.add(entry.repo)
            self._loaded_at = self._generations()

    def touch_files(self, entries: Sequence[FileEntry]) -> None:
        """Record the new ``size``/``mtime_ns`` of indexed files; chunks stay as they are."""
        with self._lock, self._db.transaction() as tx:
            for entry in entries:
                _, file_id = self._ids(entry.repo, entry.path)
                tx.execute(
                    "UPDATE index_files SET sealed = ? WHERE file_id = ?",
                    (self._cipher.seal("files", file_id, _file_record(entry)), file_id),
                )

    def remove_files(self, repo: str, paths: Iterable[str]) -> None:
        """Drop the files at ``paths`` and all their chunks from ``repo``."""
        with self._lock:
            searcher = self._writable(repo)
            removed: list[int] = []
            with self._db.transaction() as tx:
                for path in paths:
                    _, file_id = self._ids(repo, path)
                    removed += self._delete_file(tx, file_id)
                self._bump(tx, self._cipher.name("repo", repo))
            searcher.remove(repo, removed)
            self._dirty.add(repo)
            self._loaded_at = self._generations()

    def search(
        self, query: str, query_vector: Sequence[float], *, repos: Sequence[str], k: int
    ) -> list[SearchHit]:
        """The best ``k`` chunks over ``repos``, by hybrid (vector and keyword) rank."""
        with self._lock:
            fused = self._load().search(query, query_vector, repos, k)
            if not fused:
                return []
            chunks = self._chunks([f.row_id for f in fused])
        return [SearchHit(chunks[f.row_id], f.score, f.vector_rank, f.keyword_rank) for f in fused]

    def save(self) -> None:
        """Seal and save the graph and BM25 index of every repository changed since.

        A process that keeps the index open (``aifr ingest --watch``) calls it after each
        run, so that other processes open the new state without rebuilding it.
        """
        with self._lock:
            if self._searcher is not None and self._dirty:
                with self._db.transaction() as tx:
                    for repo in sorted(self._dirty):
                        self._save_indexes(tx, repo)
                self._dirty.clear()

    def close(self) -> None:
        """Save the sealed indexes of every changed repository, then close the file."""
        with self._lock:
            self.save()
            self._db.close()

    def __enter__(self) -> SqliteChunkIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rows ----------------------------------------------------------------------------

    def _ids(self, repo: str, path: str) -> tuple[bytes, bytes]:
        return self._cipher.name("repo", repo), self._cipher.name("file", repo, path)

    def _ensure_repo(self, tx: sqlite3.Connection, repo: str, repo_id: bytes) -> None:
        sealed = self._cipher.seal("repos", repo_id, repo.encode())
        tx.execute(
            "INSERT INTO index_repos(repo_id, sealed, generation) VALUES (?, ?, 1) "
            "ON CONFLICT(repo_id) DO UPDATE SET generation = generation + 1",
            (repo_id, sealed),
        )

    @staticmethod
    def _bump(tx: sqlite3.Connection, repo_id: bytes) -> None:
        tx.execute(
            "UPDATE index_repos SET generation = generation + 1 WHERE repo_id = ?", (repo_id,)
        )

    @staticmethod
    def _delete_file(tx: sqlite3.Connection, file_id: bytes) -> list[int]:
        rows = tx.execute("SELECT row_id FROM index_chunks WHERE file_id = ?", (file_id,))
        old = [r["row_id"] for r in rows]
        tx.execute("DELETE FROM index_chunks WHERE file_id = ?", (file_id,))
        tx.execute("DELETE FROM index_files WHERE file_id = ?", (file_id,))
        return old

    def _insert_chunk(
        self,
        tx: sqlite3.Connection,
        file_id: bytes,
        repo_id: bytes,
        ordinal: int,
        chunk: Chunk,
        vector: np.ndarray[Any, np.dtype[np.float32]],
    ) -> int:
        aad = _chunk_aad(file_id, ordinal)
        record = json.dumps(
            {
                "repo": chunk.repo,
                "path": chunk.path,
                "start_line": chunk.start_line,
                "end_line": chunk.end_line,
                "language": chunk.language,
                "text": chunk.text,
                "content_hash": chunk.content_hash,
            }
        ).encode()
        cursor = tx.execute(
            "INSERT INTO index_chunks(file_id, ordinal, repo_id, sealed, vector) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                file_id,
                ordinal,
                repo_id,
                self._cipher.seal("chunks", aad, record),
                self._cipher.seal("vectors", aad, vector.astype(np.float32).tobytes()),
            ),
        )
        row_id = cursor.lastrowid
        assert row_id is not None  # noqa: S101  # an INSERT always sets it
        return row_id

    def _chunks(self, row_ids: Sequence[int]) -> dict[int, Chunk]:
        marks = ",".join("?" * len(row_ids))
        with translate_sqlite_errors(f"reading {self.path}"):
            rows = self._db.connect().execute(
                f"SELECT row_id, file_id, ordinal, sealed FROM index_chunks "  # noqa: S608  # only ? marks are formatted in
                f"WHERE row_id IN ({marks})",
                list(row_ids),
            )
            found = {}
            for row in rows:
                aad = _chunk_aad(bytes(row["file_id"]), row["ordinal"])
                found[row["row_id"]] = Chunk(
                    **json.loads(self._cipher.open("chunks", aad, row["sealed"]))
                )
        return found

    def _save_indexes(self, tx: sqlite3.Connection, repo: str) -> None:
        """Seal ``repo``'s HNSW graph and BM25 index, tagged with its generation."""
        assert self._searcher is not None  # noqa: S101  # only called once loaded
        repo_id = self._cipher.name("repo", repo)
        row = tx.execute(
            "SELECT generation FROM index_repos WHERE repo_id = ?", (repo_id,)
        ).fetchone()
        vectors = self._searcher.vectors.get(repo)
        if row is None or vectors is None:
            return
        generation = int(row["generation"])
        aad = repo_id + generation.to_bytes(8, "big")
        for table, data in (
            ("index_graphs", vectors.dump()),
            ("index_keywords", self._searcher.keywords(repo).dump()),
        ):
            tx.execute(
                f"INSERT INTO {table}(repo_id, generation, sealed) VALUES (?, ?, ?) "  # noqa: S608  # a fixed table name
                "ON CONFLICT(repo_id) DO UPDATE SET generation = excluded.generation, "
                "sealed = excluded.sealed",
                (repo_id, generation, self._cipher.seal(table[6:], aad, data)),
            )


def _file_record(entry: FileEntry) -> bytes:
    return json.dumps(
        {
            "repo": entry.repo,
            "path": entry.path,
            "content_hash": entry.content_hash,
            "size": entry.size,
            "mtime_ns": entry.mtime_ns,
        }
    ).encode()
