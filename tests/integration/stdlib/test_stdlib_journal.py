"""The file journal: primitive actions, inverses and roll-back of a plan that fails half-way."""

from __future__ import annotations

from pathlib import Path

import pytest

from aifr.errors import SandboxRefusalError
from aifr.stdlib import Confinement, FsJournal
from aifr.stdlib.journal import Plan, inverse_of
from stdlib_kit import snapshot


def _journal(root: Path) -> FsJournal:
    root.mkdir(parents=True, exist_ok=True)
    return FsJournal(root / ".aifr", Confinement([root], reserved=[root / ".aifr"]))


def test_a_plan_that_fails_half_way_is_rolled_back_and_forgotten(tmp_path: Path) -> None:
    root = tmp_path / "p"
    journal = _journal(root)
    (root / "a.txt").write_text("keep me")
    before = snapshot(root / "a.txt")
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    staged = journal.stage(b"new", 0o644)
    actions = [
        {"op": "stash", "root": str(root), "path": "a.txt", "blob": "b" * 32},
        {"op": "stash", "root": str(root), "path": "absent.txt", "blob": "c" * 32},
        {"op": "place", "root": str(root), "path": "link/x.txt", "blob": staged},
    ]
    with pytest.raises(SandboxRefusalError) as caught:
        journal.perform(
            capability_id="t.write",
            scope="k",
            inputs={},
            plan=lambda: Plan(actions, {}, staged=(staged,)),
        )
    assert caught.value.rule == "symlink_refused"
    assert snapshot(root / "a.txt") == before
    assert not (root / "absent.txt").exists()
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert list(journal.entries.iterdir()) == []
    assert list(journal.keys.iterdir()) == []
    assert list(journal.blobs.iterdir()) == []  # no staged content, no stray markers


def test_rolling_back_after_the_folder_vanished_does_not_make_it_again(tmp_path: Path) -> None:
    # A write stashed "nothing" at d/f.txt, then d was swapped away before the place:
    # the roll-back has nothing to put back and must not recreate d.
    root = tmp_path / "p"
    journal = _journal(root)
    (root / "d").mkdir()
    stash = {"op": "stash", "root": str(root), "path": "d/f.txt", "blob": "c" * 32}
    journal.apply([stash])
    (root / "d").rmdir()
    journal.apply(inverse_of([stash]), make_parents=True)
    assert not (root / "d").exists()


def test_the_inverse_of_an_inverse_restores_the_forward_change(tmp_path: Path) -> None:
    root = tmp_path / "p"
    journal = _journal(root)
    (root / "a.txt").write_text("one")
    forward = [
        {
            "op": "rename",
            "src_root": str(root),
            "src": "a.txt",
            "dst_root": str(root),
            "dst": "b.txt",
        }
    ]
    journal.apply(forward)
    journal.apply(inverse_of(forward))
    assert (root / "a.txt").read_text() == "one"
    assert not (root / "b.txt").exists()
    journal.apply(inverse_of(inverse_of(forward)))
    assert (root / "b.txt").read_text() == "one"
    assert not (root / "a.txt").exists()


def test_applying_a_plan_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    root = tmp_path / "p"
    journal = _journal(root)
    (root / "a.txt").write_text("old")
    staged = journal.stage(b"new", 0o600)
    plan = [
        {"op": "mkdir", "root": str(root), "path": "d"},
        {"op": "stash", "root": str(root), "path": "a.txt", "blob": "c" * 32},
        {"op": "place", "root": str(root), "path": "a.txt", "blob": staged},
    ]
    journal.apply(plan)
    once = snapshot(root / "a.txt")
    journal.apply(plan)
    assert snapshot(root / "a.txt") == once
    assert (root / "a.txt").read_text() == "new"
    journal.apply(inverse_of(plan))
    assert (root / "a.txt").read_text() == "old"
    assert not (root / "d").exists()
