"""WorkspaceWatcher: real file-system events, grouped in a debounce window."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from aifr.ingest.watch import WorkspaceWatcher


def _start(
    root: Path, debounce_ms: int
) -> tuple[queue.Queue[list[str]], threading.Event, threading.Thread]:
    seen: queue.Queue[list[str]] = queue.Queue()
    stop = threading.Event()
    watcher = WorkspaceWatcher(root, debounce_ms=debounce_ms, on_change=seen.put, stop_event=stop)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    return seen, stop, thread


def _settle(root: Path, seen: queue.Queue[list[str]]) -> None:
    """Write a probe until the watcher reports it: then it is surely watching."""
    probe = root / "probe.txt"
    for attempt in range(50):
        probe.write_text(str(attempt))
        try:
            if "probe.txt" in seen.get(timeout=0.2):
                break
        except queue.Empty:
            continue
    while not seen.empty():
        seen.get_nowait()


def test_writes_in_one_window_arrive_as_one_batch_of_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    seen, stop, thread = _start(tmp_path, debounce_ms=300)
    try:
        _settle(tmp_path, seen)
        (tmp_path / "src" / "a.py").write_text("a = 1\n")
        (tmp_path / "src" / "b.py").write_text("b = 1\n")
        (tmp_path / "notes.md").write_text("# n\n")
        batch = seen.get(timeout=10)
        while not {"src/a.py", "src/b.py", "notes.md"} <= set(batch):
            batch = batch + seen.get(timeout=10)  # a slow host may split the window
        assert batch == sorted(batch)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def test_changes_under_aifr_and_git_are_not_reported(tmp_path: Path) -> None:
    (tmp_path / ".aifr" / "index").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    seen, stop, thread = _start(tmp_path, debounce_ms=200)
    try:
        _settle(tmp_path, seen)
        (tmp_path / ".aifr" / "index" / "index.db").write_bytes(b"x")
        (tmp_path / ".git" / "HEAD").write_text("ref\n")
        (tmp_path / "real.py").write_text("r = 1\n")
        batch = seen.get(timeout=10)
        while "real.py" not in batch:
            batch = batch + seen.get(timeout=10)
        assert not any(p.startswith((".aifr", ".git")) for p in batch)
    finally:
        stop.set()
        thread.join(10)
