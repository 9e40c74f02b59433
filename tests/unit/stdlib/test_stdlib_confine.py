"""Path text checks: what is refused before the disk is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from aifr.errors import SandboxRefusalError
from aifr.stdlib import Confinement


@pytest.fixture
def confinement(tmp_path: Path) -> Confinement:
    (tmp_path / "root").mkdir()
    (tmp_path / "other").mkdir()
    return Confinement(
        [tmp_path / "root", tmp_path / "other"], reserved=[tmp_path / "root" / ".aifr"]
    )


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("../x", "path_outside_root"),
        ("a/../b", "path_outside_root"),
        ("%2e%2e/x", "path_outside_root"),
        ("%252e%252e%252fx", "path_outside_root"),
        ("..\\x", "path_outside_root"),
        ("\uff0e\uff0e/x", "path_outside_root"),
        ("\u2025/x", "path_outside_root"),
        ("%2fetc%2fpasswd", "path_outside_root"),
        ("/etc/passwd", "path_outside_root"),
        ("", "invalid_path"),
        ("a\0b", "invalid_path"),
        (".aifr/aifr.db", "path_reserved"),
        ("./.aifr", "path_reserved"),
    ],
)
def test_suspicious_spellings_are_refused_with_their_rule(
    confinement: Confinement, raw: str, rule: str
) -> None:
    with pytest.raises(SandboxRefusalError) as caught:
        confinement.locate(raw)
    assert caught.value.rule == rule
    assert caught.value.details["path"] == raw


def test_relative_paths_are_below_the_first_root(confinement: Confinement) -> None:
    located = confinement.locate("./notes//a.txt")
    assert located.root == confinement.roots[0]
    assert located.parts == ("notes", "a.txt")
    assert located.relative == "notes/a.txt"


def test_absolute_paths_pick_the_root_they_are_under(
    confinement: Confinement, tmp_path: Path
) -> None:
    located = confinement.locate(str(tmp_path / "other" / "x" / "y.txt"))
    assert located.root == confinement.roots[1]
    assert located.parts == ("x", "y.txt")


def test_a_sibling_folder_sharing_a_prefix_is_not_inside(
    confinement: Confinement, tmp_path: Path
) -> None:
    with pytest.raises(SandboxRefusalError) as caught:
        confinement.locate(str(tmp_path / "root-evil" / "x"))
    assert caught.value.rule == "path_outside_root"


def test_names_that_merely_contain_dots_are_fine(confinement: Confinement) -> None:
    assert confinement.locate("...").parts == ("...",)
    assert confinement.locate("a..b/c.").parts == ("a..b", "c.")
    assert confinement.locate("100%25 done.txt").parts == ("100%25 done.txt",)
