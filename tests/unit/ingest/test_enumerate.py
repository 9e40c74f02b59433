"""WorkspaceEnumerator: gitignore nesting, globs, caps, symlinks, fixed order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aifr.errors import ErrorCode, IngestError
from aifr.ingest.enumerate import WorkspaceEnumerator, is_binary


def _write(root: Path, rel: str, text: str = "x\n") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _paths(root: Path, **kwargs: object) -> list[str]:
    return [f.path for f in WorkspaceEnumerator(**kwargs).enumerate(root).files]  # type: ignore[arg-type]


def test_root_gitignore_hides_matching_files_and_directories(tmp_path: Path) -> None:
    _write(tmp_path, ".gitignore", "*.log\nbuild/\n")
    _write(tmp_path, "a.py")
    _write(tmp_path, "debug.log")
    _write(tmp_path, "build/out.py")
    _write(tmp_path, "src/build.py")
    assert _paths(tmp_path) == [".gitignore", "a.py", "src/build.py"]


def test_nested_gitignore_applies_below_its_folder_and_can_reinclude(tmp_path: Path) -> None:
    _write(tmp_path, ".gitignore", "*.txt\n")
    _write(tmp_path, "top.txt")
    _write(tmp_path, "docs/.gitignore", "!keep.txt\nsecret.md\n")
    _write(tmp_path, "docs/keep.txt")
    _write(tmp_path, "docs/drop.txt")
    _write(tmp_path, "docs/secret.md")
    _write(tmp_path, "other/secret.md")
    assert _paths(tmp_path) == [".gitignore", "docs/.gitignore", "docs/keep.txt", "other/secret.md"]


def test_anchored_pattern_in_nested_gitignore_is_relative_to_its_folder(tmp_path: Path) -> None:
    _write(tmp_path, "pkg/.gitignore", "/gen.py\n")
    _write(tmp_path, "pkg/gen.py")
    _write(tmp_path, "pkg/sub/gen.py")
    assert _paths(tmp_path) == ["pkg/.gitignore", "pkg/sub/gen.py"]


def test_git_and_aifr_folders_are_never_entered_even_when_included(tmp_path: Path) -> None:
    _write(tmp_path, ".git/config")
    _write(tmp_path, ".aifr/keys/index.key")
    _write(tmp_path, "main.go")
    assert _paths(tmp_path, include=["**"]) == ["main.go"]


def test_include_and_exclude_globs_select_files(tmp_path: Path) -> None:
    for rel in ("src/a.py", "src/a.min.js", "tests/t.py", "README.md"):
        _write(tmp_path, rel)
    assert _paths(tmp_path, include=["src/**", "*.md"], exclude=["*.min.js"]) == [
        "README.md",
        "src/a.py",
    ]


def test_files_over_the_size_cap_are_skipped_with_a_reason(tmp_path: Path) -> None:
    _write(tmp_path, "small.txt", "ok\n")
    _write(tmp_path, "big.txt", "y" * 2000)
    result = WorkspaceEnumerator(max_file_bytes=1000).enumerate(tmp_path)
    assert [f.path for f in result.files] == ["small.txt"]
    assert [(s.path, s.reason) for s in result.skipped] == [("big.txt", "too_large")]


def test_symlink_leaving_the_workspace_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0\n")
    work = tmp_path / "work"
    work.mkdir()
    _write(work, "inside.txt")
    (work / "escape.txt").symlink_to(outside / "passwd")
    (work / "escape_dir").symlink_to(outside, target_is_directory=True)
    (work / "ok_link.txt").symlink_to(work / "inside.txt")
    result = WorkspaceEnumerator().enumerate(work)
    assert [f.path for f in result.files] == ["inside.txt", "ok_link.txt"]
    refused = {(s.path, s.reason) for s in result.skipped}
    assert ("escape.txt", "symlink_escape") in refused
    assert ("escape_dir", "symlink_escape") in refused


def test_symlink_into_the_aifr_folder_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, ".aifr/keys/index.key", "k\n")
    (tmp_path / "key.txt").symlink_to(tmp_path / ".aifr/keys/index.key")
    result = WorkspaceEnumerator().enumerate(tmp_path)
    assert result.files == []
    assert [(s.path, s.reason) for s in result.skipped] == [("key.txt", "symlink_escape")]


def test_fifo_is_skipped_as_not_regular(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    result = WorkspaceEnumerator().enumerate(tmp_path)
    assert [(s.path, s.reason) for s in result.skipped] == [("pipe", "not_regular")]


def test_order_is_sorted_by_path_whatever_the_creation_order(tmp_path: Path) -> None:
    for rel in ("z.py", "a/b.py", "m.py", "a/a.py", "B.py"):
        _write(tmp_path, rel)
    assert _paths(tmp_path) == ["B.py", "a/a.py", "a/b.py", "m.py", "z.py"]


def test_missing_workspace_is_an_ingest_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError) as caught:
        WorkspaceEnumerator().enumerate(tmp_path / "nope")
    assert caught.value.code == ErrorCode.INGEST_FAILED


def test_nul_byte_marks_a_file_binary() -> None:
    assert is_binary(b"\x89PNG\r\n\x1a\n\0\0")
    assert not is_binary("naïve text\n".encode())


def test_a_file_whose_name_holds_a_secret_is_skipped_and_reported_redacted(tmp_path: Path) -> None:
    _write(tmp_path, "keys/AKIAQ3EGRWKZ5XVN7TUP.txt")
    _write(tmp_path, "ok.py")
    result = WorkspaceEnumerator().enumerate(tmp_path)
    assert [f.path for f in result.files] == ["ok.py"]
    assert [(s.path, s.reason) for s in result.skipped] == [
        ("keys/[REDACTED:aws_access_key].txt", "secret_in_path")
    ]


def test_a_folder_whose_name_holds_a_secret_is_not_entered(tmp_path: Path) -> None:
    _write(tmp_path, "ghp_R8fK2mLq9ZxV4tN7bC1wY6pH3sJ5dG0aE2iU/inside.py")
    result = WorkspaceEnumerator().enumerate(tmp_path)
    assert result.files == []
    assert [(s.path, s.reason) for s in result.skipped] == [
        ("[REDACTED:github_token]", "secret_in_path")
    ]


def test_an_archive_may_exceed_the_file_cap_up_to_its_own(tmp_path: Path) -> None:
    (tmp_path / "vendor.zip").write_bytes(b"PK" + b"z" * 3000)
    (tmp_path / "huge.tar.gz").write_bytes(b"z" * 9000)
    (tmp_path / "big.py").write_text("x" * 3000)
    result = WorkspaceEnumerator(max_file_bytes=1000, max_archive_bytes=5000).enumerate(tmp_path)
    assert [f.path for f in result.files] == ["vendor.zip"]
    assert [(s.path, s.reason) for s in result.skipped] == [
        ("big.py", "too_large"),
        ("huge.tar.gz", "too_large"),
    ]
