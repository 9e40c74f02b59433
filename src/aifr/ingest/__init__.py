"""Workspace ingestion and retrieval (DESIGN.md part H, seed 004)."""

from aifr.ingest.ports import Chunk, ChunkIndex, Embedder, FileEntry, SearchHit

__all__ = ["Chunk", "ChunkIndex", "Embedder", "FileEntry", "SearchHit"]
