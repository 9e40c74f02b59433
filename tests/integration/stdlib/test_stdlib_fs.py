"""io.fs.* on real files: confinement, compensation round-trips, idempotent repeats."""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aifr.errors import ErrorCode, ExecutionError, InputValidationError, SandboxRefusalError
from stdlib_kit import Lib, build_lib, snapshot, tree


@pytest.fixture
def lib(tmp_path: Path) -> Lib:
    return build_lib(tmp_path / "project")


def _aged(path: Path, content: bytes, mode: int) -> tuple[str, int, int] | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.chmod(path, mode)
    os.utime(path, ns=(1_500_000_000_123_456_789, 1_500_000_000_123_456_789))
    return snapshot(path)


def test_write_then_read_returns_the_same_text(lib: Lib) -> None:
    written = lib.call("io.fs.write_file", {"path": "notes/a.txt", "content": "héllo"})
    read = lib.call("io.fs.read_file", {"path": "notes/a.txt"})
    assert written["created"] is True
    assert read["content"] == "héllo"
    assert read["sha256"] == written["sha256"]


def test_binary_content_round_trips_through_base64(lib: Lib) -> None:
    blob = bytes(range(256))
    lib.call(
        "io.fs.write_file",
        {"path": "b.bin", "content": base64.b64encode(blob).decode(), "encoding": "base64"},
    )
    assert (lib.root / "b.bin").read_bytes() == blob
    read = lib.call("io.fs.read_file", {"path": "b.bin", "encoding": "base64"})
    assert base64.b64decode(read["content"]) == blob


def test_reading_binary_as_text_fails_naming_base64(lib: Lib) -> None:
    (lib.root / "b.bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ExecutionError) as caught:
        lib.call("io.fs.read_file", {"path": "b.bin"})
    assert caught.value.code is ErrorCode.EXECUTION_FAILED
    assert "base64" in caught.value.message


def test_compensating_a_write_to_a_new_file_removes_it_and_its_new_folders(lib: Lib) -> None:
    before = tree(lib.root)
    out = lib.call("io.fs.write_file", {"path": "deep/er/new.txt", "content": "x"})
    lib.call("io.fs.restore", out["undo"])
    assert tree(lib.root) == before
    assert not (lib.root / "deep").exists()


def test_compensating_an_overwrite_restores_content_mode_and_mtime(lib: Lib) -> None:
    target = lib.root / "conf.ini"
    original = _aged(target, b"old = 1\n", 0o640)
    out = lib.call("io.fs.write_file", {"path": "conf.ini", "content": "new = 2\n"})
    assert snapshot(target) != original
    assert (lib.root / "conf.ini").read_text() == "new = 2\n"
    assert snapshot(target)[1] == 0o640  # the new content keeps the file's mode
    lib.call("io.fs.restore", out["undo"])
    assert snapshot(target) == original


def test_compensating_a_delete_restores_the_file_exactly(lib: Lib) -> None:
    target = lib.root / "keep" / "data.csv"
    original = _aged(target, b"a,b\n1,2\n", 0o600)
    out = lib.call("io.fs.delete", {"path": "keep/data.csv"})
    assert not target.exists()
    lib.call("io.fs.restore", out["undo"])
    assert snapshot(target) == original


def test_compensating_a_recursive_folder_delete_restores_the_whole_tree(lib: Lib) -> None:
    _aged(lib.root / "dir" / "a.txt", b"a", 0o644)
    _aged(lib.root / "dir" / "sub" / "b.txt", b"b", 0o600)
    before = tree(lib.root)
    out = lib.call("io.fs.delete", {"path": "dir", "recursive": True})
    assert not (lib.root / "dir").exists()
    lib.call("io.fs.restore", out["undo"])
    assert tree(lib.root) == before


def test_deleting_a_non_empty_folder_needs_recursive(lib: Lib) -> None:
    _aged(lib.root / "dir" / "a.txt", b"a", 0o644)
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("io.fs.delete", {"path": "dir"})
    assert caught.value.rule == "directory_not_empty"
    assert (lib.root / "dir" / "a.txt").exists()


def test_compensating_a_move_moves_it_back_and_restores_a_replaced_destination(lib: Lib) -> None:
    source = _aged(lib.root / "a.txt", b"source", 0o600)
    replaced = _aged(lib.root / "out" / "b.txt", b"replaced", 0o644)
    out = lib.call("io.fs.move", {"source": "a.txt", "destination": "out/b.txt", "overwrite": True})
    assert out["replaced"] is True
    assert snapshot(lib.root / "out" / "b.txt") == source
    lib.call("io.fs.restore", out["undo"])
    assert snapshot(lib.root / "a.txt") == source
    assert snapshot(lib.root / "out" / "b.txt") == replaced


def test_moving_onto_an_existing_file_without_overwrite_is_refused(lib: Lib) -> None:
    (lib.root / "a.txt").write_text("a")
    (lib.root / "b.txt").write_text("b")
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("io.fs.move", {"source": "a.txt", "destination": "b.txt"})
    assert caught.value.rule == "destination_exists"
    assert (lib.root / "a.txt").read_text() == "a"


def test_a_restore_can_itself_be_restored(lib: Lib) -> None:
    target = lib.root / "f.txt"
    original = _aged(target, b"one", 0o644)
    out = lib.call("io.fs.write_file", {"path": "f.txt", "content": "two"})
    after_write = snapshot(target)
    undone = lib.call("io.fs.restore", out["undo"])
    assert snapshot(target) == original
    lib.call("io.fs.restore", undone["undo"])
    assert snapshot(target) == after_write


def test_restoring_the_same_token_twice_returns_the_first_result(lib: Lib) -> None:
    target = lib.root / "f.txt"
    original = _aged(target, b"one", 0o644)
    out = lib.call("io.fs.write_file", {"path": "f.txt", "content": "two"})
    first = lib.call("io.fs.restore", out["undo"])
    second = lib.call("io.fs.restore", out["undo"])
    assert first == second
    assert snapshot(target) == original


def test_an_unknown_token_is_rejected_as_input(lib: Lib) -> None:
    with pytest.raises(InputValidationError) as caught:
        lib.call("io.fs.restore", {"token": "0" * 32})
    assert caught.value.code is ErrorCode.INPUT_INVALID


def test_a_repeated_write_with_the_same_key_is_a_no_op_returning_the_first_result(lib: Lib) -> None:
    first = lib.call("io.fs.write_file", {"path": "k.txt", "content": "v1"}, key="k-1")
    (lib.root / "k.txt").write_text("changed by someone else")
    second = lib.call("io.fs.write_file", {"path": "k.txt", "content": "v1"}, key="k-1")
    assert second == first
    assert (lib.root / "k.txt").read_text() == "changed by someone else"


def test_the_same_key_from_another_principal_is_another_write(lib: Lib) -> None:
    first = lib.call("io.fs.write_file", {"path": "k.txt", "content": "v1"}, key="k-1")
    second = lib.call(
        "io.fs.write_file", {"path": "k.txt", "content": "v1"}, key="k-1", principal="bob"
    )
    assert first["undo"] != second["undo"]


def test_reusing_a_key_for_different_inputs_is_a_conflict(lib: Lib) -> None:
    lib.call("io.fs.write_file", {"path": "k.txt", "content": "v1"}, key="k-1")
    with pytest.raises(InputValidationError) as caught:
        lib.call("io.fs.write_file", {"path": "k.txt", "content": "v2"}, key="k-1")
    assert caught.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
    assert (lib.root / "k.txt").read_text() == "v1"


@pytest.mark.parametrize("changed", [{"overwrite": False}, {"create_dirs": False}])
def test_reusing_a_write_key_with_other_options_is_a_conflict(
    lib: Lib, changed: dict[str, bool]
) -> None:
    lib.call("io.fs.write_file", {"path": "k.txt", "content": "v1"}, key="k-1")
    with pytest.raises(InputValidationError) as caught:
        lib.call("io.fs.write_file", {"path": "k.txt", "content": "v1", **changed}, key="k-1")
    assert caught.value.code is ErrorCode.IDEMPOTENCY_CONFLICT


def test_reusing_a_move_key_with_other_options_is_a_conflict(lib: Lib) -> None:
    (lib.root / "a.txt").write_text("a")
    lib.call("io.fs.move", {"source": "a.txt", "destination": "b/a.txt"}, key="m-1")
    with pytest.raises(InputValidationError) as caught:
        lib.call(
            "io.fs.move",
            {"source": "a.txt", "destination": "b/a.txt", "create_dirs": False},
            key="m-1",
        )
    assert caught.value.code is ErrorCode.IDEMPOTENCY_CONFLICT


def test_a_write_that_fails_keeps_no_copy_of_its_content(lib: Lib) -> None:
    with pytest.raises(ExecutionError) as caught:
        lib.call(
            "io.fs.write_file",
            {"path": "missing/a.txt", "content": "secret draft", "create_dirs": False},
        )
    assert caught.value.details["errno"] == "ENOENT"
    assert not (lib.root / "missing").exists()
    stored = [p for p in (lib.state / "fs").rglob("*") if p.is_file() and p.name != "lock"]
    assert stored == []


def test_a_repeated_delete_with_the_same_key_keeps_the_first_trash_entry(lib: Lib) -> None:
    original = _aged(lib.root / "gone.txt", b"precious", 0o600)
    first = lib.call("io.fs.delete", {"path": "gone.txt"}, key="d-1")
    second = lib.call("io.fs.delete", {"path": "gone.txt"}, key="d-1")
    assert second == first
    lib.call("io.fs.restore", first["undo"])
    assert snapshot(lib.root / "gone.txt") == original


def _crash_after_effect(lib: Lib) -> None:
    """Turn the finished key record back to 'pending', as if the process died before marking it."""
    (record_path,) = (lib.state / "fs" / "keys").glob("*.json")
    record = json.loads(record_path.read_text())
    record["state"] = "pending"
    record_path.write_text(json.dumps(record))


def test_a_write_killed_after_its_effect_is_not_backed_up_again_on_retry(lib: Lib) -> None:
    target = lib.root / "f.txt"
    original = _aged(target, b"original", 0o644)
    first = lib.call("io.fs.write_file", {"path": "f.txt", "content": "new"}, key="w-1")
    _crash_after_effect(lib)
    second = lib.call("io.fs.write_file", {"path": "f.txt", "content": "new"}, key="w-1")
    assert second == first
    assert target.read_text() == "new"
    lib.call("io.fs.restore", second["undo"])
    assert snapshot(target) == original


def test_a_move_killed_after_its_effect_completes_once_on_retry(lib: Lib) -> None:
    source = _aged(lib.root / "a.txt", b"a", 0o644)
    first = lib.call("io.fs.move", {"source": "a.txt", "destination": "b.txt"}, key="m-1")
    _crash_after_effect(lib)
    second = lib.call("io.fs.move", {"source": "a.txt", "destination": "b.txt"}, key="m-1")
    assert second == first
    assert snapshot(lib.root / "b.txt") == source
    assert not (lib.root / "a.txt").exists()


def test_list_dir_reports_entries_without_following_symlinks(lib: Lib) -> None:
    (lib.root / "d").mkdir()
    (lib.root / "d" / "f.txt").write_text("12345")
    (lib.root / "d" / "link").symlink_to("/etc")
    listing = lib.call("io.fs.list_dir", {"path": "d"})
    assert listing["entries"] == [
        {"name": "f.txt", "type": "file", "size": 5},
        {"name": "link", "type": "symlink", "size": len("/etc")},
    ]


def test_stat_describes_missing_and_present_entries(lib: Lib) -> None:
    _aged(lib.root / "f.txt", b"abc", 0o640)
    present = lib.call("io.fs.stat", {"path": "f.txt"})
    missing = lib.call("io.fs.stat", {"path": "nope/f.txt"})
    assert (present["exists"], present["type"], present["size"], present["mode"]) == (
        True,
        "file",
        3,
        0o640,
    )
    assert present["mtime_ns"] == 1_500_000_000_123_456_789
    assert missing["exists"] is False


def test_files_over_the_read_cap_are_refused(tmp_path: Path) -> None:
    lib = build_lib(tmp_path / "p", max_read_bytes=10)
    (lib.root / "big.txt").write_text("x" * 11)
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("io.fs.read_file", {"path": "big.txt"})
    assert caught.value.rule == "file_too_large"


def test_content_over_the_write_cap_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    lib = build_lib(tmp_path / "p", max_write_bytes=10)
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("io.fs.write_file", {"path": "big.txt", "content": "x" * 11})
    assert caught.value.rule == "content_too_large"
    assert not (lib.root / "big.txt").exists()


def test_write_with_overwrite_false_refuses_an_existing_file(lib: Lib) -> None:
    (lib.root / "f.txt").write_text("keep")
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("io.fs.write_file", {"path": "f.txt", "content": "x", "overwrite": False})
    assert caught.value.rule == "file_exists"
    assert (lib.root / "f.txt").read_text() == "keep"


def test_absolute_paths_inside_a_second_root_are_allowed(tmp_path: Path) -> None:
    other = tmp_path / "shared"
    other.mkdir()
    lib = build_lib(tmp_path / "p", fs_roots=[tmp_path / "p", other])
    lib.call("io.fs.write_file", {"path": str(other / "x.txt"), "content": "x"})
    assert (other / "x.txt").read_text() == "x"


@pytest.fixture
def other_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A root on another filesystem than the state folder (tmpfs), so moves become copies."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.fail("this test needs /dev/shm on a filesystem of its own")
    root = Path(tempfile.mkdtemp(dir=shm, prefix="aifr-test-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_round_trips_hold_across_filesystems(tmp_path: Path, other_filesystem: Path) -> None:
    lib = build_lib(tmp_path / "p", fs_roots=[other_filesystem], state_dir=tmp_path / "state")
    target = other_filesystem / "f.txt"
    original = _aged(target, b"on tmpfs", 0o640)
    written = lib.call("io.fs.write_file", {"path": "f.txt", "content": "replaced"})
    lib.call("io.fs.restore", written["undo"])
    assert snapshot(target) == original
    deleted = lib.call("io.fs.delete", {"path": "f.txt"})
    assert not target.exists()
    lib.call("io.fs.restore", deleted["undo"])
    assert snapshot(target) == original
