"""IngestPipeline (in-process worker): incremental counts, archives, skips, no secret stored."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from aifr.ingest.archives import ArchiveQuotas
from aifr.ingest.enumerate import Skipped, WorkspaceEnumerator, WorkspaceFile
from aifr.ingest.isolation import InProcessWorker
from aifr.ingest.manifest import IngestCounts
from aifr.ingest.parsing import ParsedFile
from aifr.ingest.pipeline import IngestPipeline
from archive_kit import GOOD, zip_with
from canary_kit import leaked, plant
from pipeline_kit import CountingEmbedder, MemoryChunkIndex


def _pipeline(
    index: MemoryChunkIndex, embedder: CountingEmbedder, max_bytes: int = 100_000
) -> IngestPipeline:
    return IngestPipeline(
        embedder=embedder,
        index=index,
        enumerator=WorkspaceEnumerator(max_file_bytes=max_bytes),
        worker=InProcessWorker(max_file_bytes=max_bytes, quotas=ArchiveQuotas()),
        batch_size=8,
    )


def _workspace(root: Path) -> Path:
    for i in range(5):
        (root / f"m{i}.py").write_text(f"def f{i}():\n    return {i}\n")
    return root


def test_first_ingest_adds_every_file_and_stores_its_chunks(tmp_path: Path) -> None:
    index, embedder = MemoryChunkIndex(), CountingEmbedder()
    report = _pipeline(index, embedder).ingest(_workspace(tmp_path), "app")
    assert report.counts == IngestCounts(added=5)
    assert sorted(index.files("app")) == [f"m{i}.py" for i in range(5)]
    assert report.chunks_embedded == 5 and len(embedder.texts) == 5
    entry = index.files("app")["m0.py"]
    assert (entry.size, entry.mtime_ns) == (
        os.stat(tmp_path / "m0.py").st_size,
        os.stat(tmp_path / "m0.py").st_mtime_ns,
    )


def test_reingest_without_change_embeds_nothing_and_trusts_size_and_mtime(tmp_path: Path) -> None:
    index, embedder = MemoryChunkIndex(), CountingEmbedder()
    pipeline = _pipeline(index, embedder)
    pipeline.ingest(_workspace(tmp_path), "app")
    embedder.texts.clear()
    target = tmp_path / "m0.py"
    before = target.stat()
    target.write_text("def g0():\n    return 0\n")  # same size, and the old mtime put back:
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # only a hash would notice
    report = pipeline.ingest(tmp_path, "app")
    assert report.counts == IngestCounts(unchanged=5)
    assert embedder.texts == [] and report.skipped == [] and index.touched == []


def test_reingest_embeds_only_what_changed_and_removes_what_vanished(tmp_path: Path) -> None:
    index, embedder = MemoryChunkIndex(), CountingEmbedder()
    pipeline = _pipeline(index, embedder)
    pipeline.ingest(_workspace(tmp_path), "app")
    embedder.texts.clear()
    (tmp_path / "m1.py").write_text("def f1():\n    return 'changed'\n")
    (tmp_path / "m2.py").unlink()
    (tmp_path / "new.md").write_text("# New\n\nHello.\n")
    report = pipeline.ingest(tmp_path, "app")
    assert report.counts == IngestCounts(added=1, changed=1, removed=1, unchanged=3)
    assert sorted(embedder.texts) == ["# New\n\nHello.\n", "def f1():\n    return 'changed'\n"]
    assert "m2.py" not in index.files("app")


def test_touched_file_with_same_content_is_unchanged_and_gets_its_new_stat(tmp_path: Path) -> None:
    index, embedder = MemoryChunkIndex(), CountingEmbedder()
    pipeline = _pipeline(index, embedder)
    pipeline.ingest(_workspace(tmp_path), "app")
    embedder.texts.clear()
    os.utime(tmp_path / "m3.py", ns=(1_000_000_000, 1_000_000_000))
    report = pipeline.ingest(tmp_path, "app")
    assert report.counts == IngestCounts(unchanged=5)
    assert embedder.texts == [] and index.touched == ["m3.py"]
    assert index.files("app")["m3.py"].mtime_ns == 1_000_000_000


def test_binary_and_oversized_files_are_skipped_and_dropped_from_the_index(tmp_path: Path) -> None:
    index, embedder = MemoryChunkIndex(), CountingEmbedder()
    pipeline = _pipeline(index, embedder, max_bytes=1000)
    _workspace(tmp_path)
    pipeline.ingest(tmp_path, "app")
    (tmp_path / "m0.py").write_bytes(b"\x00\x01binary now")
    (tmp_path / "m1.py").write_text("x = 1\n" * 500)
    report = pipeline.ingest(tmp_path, "app")
    assert {(s.path, s.reason) for s in report.skipped} == {
        ("m0.py", "binary"),
        ("m1.py", "too_large"),
    }
    assert report.counts.removed == 2
    assert sorted(index.files("app")) == ["m2.py", "m3.py", "m4.py"]


def test_archive_members_are_ingested_under_the_archive_path_and_refusals_reported(
    tmp_path: Path,
) -> None:
    index, embedder = MemoryChunkIndex(), CountingEmbedder()
    pipeline = _pipeline(index, embedder)
    zip_with(tmp_path / "vendor.zip", {"lib/util.py": GOOD.encode(), "../escape.py": b"x = 1\n"})
    report = pipeline.ingest(tmp_path, "app")
    assert sorted(index.files("app")) == ["vendor.zip", "vendor.zip!/lib/util.py"]
    assert [(s.path, s.reason) for s in report.skipped] == [
        ("vendor.zip!/../escape.py", "archive_unsafe_path")
    ]
    assert index.chunks[("app", "vendor.zip")] == []
    again = pipeline.ingest(tmp_path, "app")
    assert again.counts == IngestCounts(unchanged=2)
    (tmp_path / "vendor.zip").unlink()
    gone = pipeline.ingest(tmp_path, "app")
    assert gone.counts == IngestCounts(removed=2) and index.files("app") == {}


def test_no_canary_secret_reaches_the_index_or_the_report(tmp_path: Path) -> None:
    plant(tmp_path)
    index, embedder = MemoryChunkIndex(), CountingEmbedder()
    report = _pipeline(index, embedder).ingest(tmp_path, "app")
    assert leaked(index.all_text()) == []
    assert leaked("\n".join(embedder.texts)) == []
    assert leaked(repr(report)) == []
    assert report.redactions == {
        "aws_access_key": 1,
        "github_token": 1,
        "high_entropy_string": 1,
        "jwt": 1,
        "private_key": 1,
        "secret_assignment": 1,
        "slack_token": 1,
        "url_password": 1,
    }
    pem = next(c for c in index.chunks[("app", "keys/server.pem")])
    assert (pem.start_line, pem.end_line) == (1, 4)
    assert "[REDACTED:private_key]" in pem.text


def test_repositories_are_kept_apart(tmp_path: Path) -> None:
    index, embedder = MemoryChunkIndex(), CountingEmbedder()
    pipeline = _pipeline(index, embedder)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x.py").write_text("x = 1\n")
    (b / "y.py").write_text("y = 2\n")
    pipeline.ingest(a, "alpha")
    report = pipeline.ingest(b, "beta")
    assert report.counts == IngestCounts(added=1)
    assert list(index.files("alpha")) == ["x.py"] and list(index.files("beta")) == ["y.py"]


def test_progress_is_reported_up_to_the_number_of_files_read(tmp_path: Path) -> None:
    index, embedder = MemoryChunkIndex(), CountingEmbedder()
    seen: list[tuple[int, int]] = []
    _pipeline(index, embedder).ingest(
        _workspace(tmp_path), "app", lambda done, total: seen.append((done, total))
    )
    assert seen[0] == (0, 5) and seen[-1] == (5, 5)


def test_a_corrupt_archive_is_reported_once_and_not_reopened_until_it_changes(
    tmp_path: Path,
) -> None:
    index, embedder = MemoryChunkIndex(), CountingEmbedder()
    pipeline = _pipeline(index, embedder)
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not a zip at all")
    first = pipeline.ingest(tmp_path, "app")
    assert [(s.path, s.reason) for s in first.skipped] == [("broken.zip", "archive_corrupt")]
    again = pipeline.ingest(tmp_path, "app")
    assert again.counts == IngestCounts(unchanged=1) and again.skipped == []


def test_code_reading_a_password_variable_is_kept_while_a_config_password_is_redacted(
    tmp_path: Path,
) -> None:
    (tmp_path / "login.py").write_text(
        "def login(request):\n    password = request.password\n    return password\n"
    )
    (tmp_path / "app.ini").write_text("[db]\npassword = hunter2-Correct-Horse-Battery\n")
    index, embedder = MemoryChunkIndex(), CountingEmbedder()
    report = _pipeline(index, embedder).ingest(tmp_path, "app")
    assert "password = request.password" in index.chunks[("app", "login.py")][0].text
    assert "hunter2" not in index.chunks[("app", "app.ini")][0].text
    assert report.redactions == {"secret_assignment": 1}


class _CountingWorker(InProcessWorker):
    def __init__(self) -> None:
        super().__init__(max_file_bytes=100_000, quotas=ArchiveQuotas())
        self.parsed: list[str] = []

    def parse(self, repo: str, files: Sequence[WorkspaceFile]) -> list[ParsedFile | Skipped]:
        self.parsed.extend(f.path for f in files)
        return super().parse(repo, files)


def test_a_binary_file_is_sniffed_without_the_worker_on_every_run(tmp_path: Path) -> None:
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)) * 40)
    (tmp_path / "a.py").write_text("a = 1\n")
    worker = _CountingWorker()
    pipeline = IngestPipeline(
        embedder=CountingEmbedder(),
        index=MemoryChunkIndex(),
        enumerator=WorkspaceEnumerator(),
        worker=worker,
    )
    first = pipeline.ingest(tmp_path, "app")
    again = pipeline.ingest(tmp_path, "app")
    assert worker.parsed == ["a.py"]
    assert [(s.path, s.reason) for s in first.skipped] == [("logo.png", "binary")]
    assert [(s.path, s.reason) for s in again.skipped] == [("logo.png", "binary")]
    assert again.counts == IngestCounts(unchanged=1)


class _GatedWorker(InProcessWorker):
    """Records each group it parses and signals when the second one starts."""

    def __init__(self) -> None:
        super().__init__(max_file_bytes=100_000, quotas=ArchiveQuotas())
        self.groups: list[int] = []
        self.second_started = threading.Event()

    def parse(self, repo: str, files: Sequence[WorkspaceFile]) -> list[ParsedFile | Skipped]:
        self.groups.append(len(files))
        if len(self.groups) == 2:
            self.second_started.set()
        return super().parse(repo, files)


class _WaitingEmbedder(CountingEmbedder):
    """Its first call waits until the next group is being parsed (or fails after 10 s)."""

    def __init__(self, worker: _GatedWorker) -> None:
        super().__init__()
        self.worker = worker
        self.overlapped: bool | None = None

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self.overlapped is None:
            self.overlapped = self.worker.second_started.wait(10)
        return super().embed(texts)


def test_the_next_group_is_parsed_while_the_model_embeds_and_the_first_group_is_small(
    tmp_path: Path,
) -> None:
    for i in range(40):
        (tmp_path / f"m{i:02}.py").write_text(f"def f{i}():\n    return {i}\n")
    worker = _GatedWorker()
    embedder = _WaitingEmbedder(worker)
    index = MemoryChunkIndex()
    report = IngestPipeline(
        embedder=embedder,
        index=index,
        enumerator=WorkspaceEnumerator(max_file_bytes=100_000),
        worker=worker,
    ).ingest(tmp_path, "app")
    assert report.counts.added == 40
    assert worker.groups == [16, 24]
    assert embedder.overlapped is True
