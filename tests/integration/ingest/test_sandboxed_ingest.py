"""Ingest through the sandboxed worker: a real child process under limits."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from aifr.ingest.archives import ArchiveQuotas
from aifr.ingest.enumerate import WorkspaceEnumerator
from aifr.ingest.isolation import InProcessWorker, IsolationLimits, SandboxedWorker
from aifr.ingest.pipeline import IngestPipeline
from archive_kit import GOOD, nested_zip, tar_with, zip_with
from canary_kit import leaked, plant
from pipeline_kit import CountingEmbedder, MemoryChunkIndex


def _hostile_workspace(root: Path) -> Path:
    plant(root)
    zip_with(
        root / "vendor.zip",
        {
            "lib/ok.py": GOOD.encode(),
            "../slip.py": b"x = 1\n",
            "/etc/abs.py": b"x = 1\n",
            "bomb.txt": b"0" * 20_000_000,
        },
        symlinks={"link": "/etc/passwd"},
    )
    tar_with(root / "dist.tar.gz", {"pkg/ok.py": GOOD.encode()}, devices=["dev/zero"])
    nested_zip(root / "deep.zip", depth=3)
    return root


def _ingest(
    root: Path, worker: InProcessWorker | SandboxedWorker
) -> tuple[MemoryChunkIndex, object]:
    index = MemoryChunkIndex()
    pipeline = IngestPipeline(
        embedder=CountingEmbedder(), index=index, enumerator=WorkspaceEnumerator(), worker=worker
    )
    return index, pipeline.ingest(root, "app")


def test_sandboxed_ingest_refuses_each_hostile_entry_and_ingests_the_rest(tmp_path: Path) -> None:
    root = _hostile_workspace(tmp_path / "ws")
    index, report = _ingest(
        root, SandboxedWorker(max_file_bytes=1 << 20, quotas=ArchiveQuotas(max_depth=2))
    )
    refused = {(s.path, s.reason) for s in report.skipped}  # type: ignore[attr-defined]
    assert refused == {
        ("vendor.zip!/../slip.py", "archive_unsafe_path"),
        ("vendor.zip!//etc/abs.py", "archive_unsafe_path"),
        ("vendor.zip!/bomb.txt", "archive_ratio"),
        ("vendor.zip!/link", "archive_link"),
        ("dist.tar.gz!/dev/zero", "archive_special"),
        ("deep.zip!/inner2.zip!/inner3.zip", "archive_depth"),
    }
    files = set(index.files("app"))
    assert {
        "vendor.zip!/lib/ok.py",
        "dist.tar.gz!/pkg/ok.py",
        "deep.zip!/level1.py",
        "deep.zip!/inner2.zip!/level2.py",
    } <= files
    assert "src/settings.py" in files
    assert leaked(index.all_text()) == []


def test_sandboxed_and_in_process_ingest_store_the_same_chunks(tmp_path: Path) -> None:
    root = _hostile_workspace(tmp_path / "ws")
    quotas = ArchiveQuotas()
    boxed, _ = _ingest(root, SandboxedWorker(max_file_bytes=1 << 20, quotas=quotas))
    plain, _ = _ingest(root, InProcessWorker(max_file_bytes=1 << 20, quotas=quotas))
    assert boxed.chunks == plain.chunks
    assert {k: (e.content_hash, e.size) for k, e in boxed.entries.items()} == {
        k: (e.content_hash, e.size) for k, e in plain.entries.items()
    }


def test_the_memory_limit_binds_the_child_and_each_file_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    for name in ("a.py", "b.py", "c.py"):
        (root / name).write_text("def f():\n    return 1\n")
    starved = SandboxedWorker(
        max_file_bytes=1 << 20,
        quotas=ArchiveQuotas(),
        isolation=IsolationLimits(memory_bytes=16 << 20),
    )
    index, report = _ingest(root, starved)
    assert [(s.path, s.reason) for s in report.skipped] == [  # type: ignore[attr-defined]
        ("a.py", "sandbox_failed"),
        ("b.py", "sandbox_failed"),
        ("c.py", "sandbox_failed"),
    ]
    assert index.files("app") == {}
    trusted, _ = _ingest(root, InProcessWorker(max_file_bytes=1 << 20, quotas=ArchiveQuotas()))
    assert sorted(trusted.files("app")) == ["a.py", "b.py", "c.py"]


def test_an_archive_whose_child_fails_is_refused_whole(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    zip_with(root / "lib.zip", {"ok.py": GOOD.encode()})
    starved = SandboxedWorker(
        max_file_bytes=1 << 20,
        quotas=ArchiveQuotas(),
        isolation=IsolationLimits(memory_bytes=16 << 20),
    )
    dest = tmp_path / "dest"
    dest.mkdir()
    report = starved.extract(root / "lib.zip", dest)
    assert report.extracted == [] and [r.reason for r in report.refused] == ["sandbox_failed"]


def test_the_ingest_child_cannot_start_another_process(tmp_path: Path) -> None:
    worker = SandboxedWorker(max_file_bytes=1 << 20, quotas=ArchiveQuotas())
    box = worker.sandbox(1 << 20)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        done = box.run(
            [sys.executable, "-I", "-c", "import os; os.fork(); print('forked')"], cwd_fd=fd
        )
    finally:
        os.close(fd)
    if done.process_limit == "none":
        pytest.skip(
            "running as root without a writable pids cgroup: no process limit can bind here"
        )
    assert done.returncode != 0 and b"forked" not in done.stdout
    assert b"BlockingIOError" in done.stderr or b"Resource temporarily unavailable" in done.stderr
