"""Workspace ingestion and retrieval (DESIGN.md part H, seed 004).

:mod:`aifr.ingest.search` (usearch, bm25s, numpy: the ``embed`` extra) is not imported
here, so importing this package stays light.
"""

from aifr.ingest.crypt import (
    INDEX_KEY_NAME,
    IndexKey,
    KeyFileProvider,
    create_key_file,
    generate_index_key,
    resolve_index_key,
    unwrap_escrow,
    write_escrow,
)
from aifr.ingest.embed import MiniLmEmbedder
from aifr.ingest.ports import Chunk, ChunkIndex, Embedder, FileEntry, SearchHit
from aifr.ingest.router import (
    PolicyRepoAccess,
    RepoAccess,
    RepositoryRouter,
    RepoVerdict,
    Routed,
    explain_lines,
)

__all__ = [
    "INDEX_KEY_NAME",
    "Chunk",
    "ChunkIndex",
    "Embedder",
    "FileEntry",
    "IndexKey",
    "KeyFileProvider",
    "MiniLmEmbedder",
    "PolicyRepoAccess",
    "RepoAccess",
    "RepoVerdict",
    "RepositoryRouter",
    "Routed",
    "SearchHit",
    "create_key_file",
    "explain_lines",
    "generate_index_key",
    "resolve_index_key",
    "unwrap_escrow",
    "write_escrow",
]
