"""Workspace ingestion and retrieval (DESIGN.md part H, seed 004).

:mod:`aifr.ingest.search` (usearch, bm25s, numpy: the ``embed`` extra) is not imported
here, so importing this package stays light.
"""

from aifr.ingest.archives import ArchiveQuotas, ExtractionReport
from aifr.ingest.chunk import ChunkLimits, ChunkPlanner
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
from aifr.ingest.embedding import EmbeddingGenerator
from aifr.ingest.enumerate import Skipped, WorkspaceEnumerator, WorkspaceFile
from aifr.ingest.isolation import FileWorker, InProcessWorker, IsolationLimits, SandboxedWorker
from aifr.ingest.manifest import IngestCounts, ManifestEmitter
from aifr.ingest.pipeline import IngestPipeline, IngestReport
from aifr.ingest.ports import Chunk, ChunkIndex, Embedder, FileEntry, SearchHit
from aifr.ingest.router import (
    PolicyRepoAccess,
    RepoAccess,
    RepositoryRouter,
    RepoVerdict,
    Routed,
    explain_lines,
)
from aifr.ingest.sanitize import SanitizedText, Sanitizer

__all__ = [
    "INDEX_KEY_NAME",
    "ArchiveQuotas",
    "Chunk",
    "ChunkIndex",
    "ChunkLimits",
    "ChunkPlanner",
    "Embedder",
    "EmbeddingGenerator",
    "ExtractionReport",
    "FileEntry",
    "FileWorker",
    "InProcessWorker",
    "IndexKey",
    "IngestCounts",
    "IngestPipeline",
    "IngestReport",
    "IsolationLimits",
    "KeyFileProvider",
    "ManifestEmitter",
    "MiniLmEmbedder",
    "PolicyRepoAccess",
    "RepoAccess",
    "RepoVerdict",
    "RepositoryRouter",
    "Routed",
    "SandboxedWorker",
    "SanitizedText",
    "Sanitizer",
    "SearchHit",
    "Skipped",
    "WorkspaceEnumerator",
    "WorkspaceFile",
    "create_key_file",
    "explain_lines",
    "generate_index_key",
    "resolve_index_key",
    "unwrap_escrow",
    "write_escrow",
]
