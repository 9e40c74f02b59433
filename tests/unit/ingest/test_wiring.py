"""build_ingest_pipeline: the [ingest] settings reach the pipeline's parts."""

from __future__ import annotations

from pathlib import Path

import pytest

from aifr.app import build_ingest_pipeline
from aifr.config import Settings, load_settings
from aifr.errors import ConfigError
from aifr.ingest.isolation import InProcessWorker, SandboxedWorker
from pipeline_kit import CountingEmbedder, MemoryChunkIndex


def _settings(tmp_path: Path, ingest: str = "") -> Settings:
    (tmp_path / "aifr.toml").write_text(f"[ingest]\n{ingest}")
    return load_settings(tmp_path)


def test_sandbox_is_on_by_default_with_the_configured_limits(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "sandbox_memory_mb = 256\narchive_max_ratio = 20\n")
    pipeline = build_ingest_pipeline(
        settings, index=MemoryChunkIndex(), embedder=CountingEmbedder()
    )  # type: ignore[arg-type]
    worker = pipeline.worker
    assert isinstance(worker, SandboxedWorker)
    assert worker.isolation.memory_bytes == 256 * 1024 * 1024
    assert worker.quotas.max_ratio == 20
    assert pipeline.scratch_dir == tmp_path.resolve() / ".aifr" / "tmp"


def test_sandbox_false_parses_in_process_and_globs_reach_the_enumerator(tmp_path: Path) -> None:
    settings = _settings(tmp_path, 'sandbox = false\ninclude = ["src/**"]\nmax_file_bytes = 4096\n')
    pipeline = build_ingest_pipeline(
        settings, index=MemoryChunkIndex(), embedder=CountingEmbedder()
    )  # type: ignore[arg-type]
    assert isinstance(pipeline.worker, InProcessWorker)
    assert pipeline.enumerator.max_file_bytes == 4096
    workspace = tmp_path / "ws"
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / "a.py").write_text("a = 1\n")
    (workspace / "b.py").write_text("b = 1\n")
    assert [f.path for f in pipeline.enumerator.enumerate(workspace).files] == ["src/a.py"]


def test_an_unknown_ingest_key_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, "max_file_byte = 10\n")
    assert "max_file_byte" in caught.value.message
