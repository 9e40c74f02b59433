"""Archive extraction: each unsafe entry refused with its reason, the rest extracted."""

from __future__ import annotations

import os
from pathlib import Path

from aifr.ingest.archives import ArchiveQuotas, extract_archive, is_archive
from archive_kit import GOOD, nested_zip, tar_with, zip_with


def _extract(
    archive: Path, tmp_path: Path, **quotas: float
) -> tuple[Path, list[str], dict[str, str]]:
    dest = tmp_path / "out"
    dest.mkdir()
    report = extract_archive(archive, dest, ArchiveQuotas(**quotas))  # type: ignore[arg-type]
    return dest, report.extracted, {r.path: r.reason for r in report.refused}


def _tree(dest: Path) -> list[str]:
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


def test_zip_bomb_by_ratio_is_refused_and_the_good_member_kept(tmp_path: Path) -> None:
    archive = zip_with(
        tmp_path / "bomb.zip", {"ok.py": GOOD.encode(), "zeros.bin": b"\0" * 20_000_000}
    )
    dest, extracted, refused = _extract(archive, tmp_path)
    assert refused == {"zeros.bin": "archive_ratio"}
    assert extracted == ["ok.py"]
    assert _tree(dest) == ["ok.py"]


def test_zip_slip_member_is_refused_and_nothing_lands_outside(tmp_path: Path) -> None:
    archive = zip_with(
        tmp_path / "slip.zip",
        {"../evil.py": b"owned", "a/../../evil2.py": b"owned", "ok.py": GOOD.encode()},
    )
    dest, extracted, refused = _extract(archive, tmp_path)
    assert refused == {
        "../evil.py": "archive_unsafe_path",
        "a/../../evil2.py": "archive_unsafe_path",
    }
    assert extracted == ["ok.py"]
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "evil2.py").exists()
    assert _tree(dest) == ["ok.py"]


def test_absolute_member_names_are_refused(tmp_path: Path) -> None:
    archive = tar_with(
        tmp_path / "abs.tar.gz",
        {"/etc/x": b"owned", "C:/win.ini": b"owned", "ok.py": GOOD.encode()},
    )
    _, extracted, refused = _extract(archive, tmp_path)
    assert refused == {"/etc/x": "archive_unsafe_path", "C:/win.ini": "archive_unsafe_path"}
    assert extracted == ["ok.py"]


def test_symlink_entries_in_zip_and_tar_are_refused(tmp_path: Path) -> None:
    zipped = zip_with(
        tmp_path / "l.zip", {"ok.py": GOOD.encode()}, symlinks={"passwd": "/etc/passwd"}
    )
    _, extracted, refused = _extract(zipped, tmp_path)
    assert (extracted, refused) == (["ok.py"], {"passwd": "archive_link"})
    tarred = tar_with(
        tmp_path / "l.tar",
        {"ok.py": GOOD.encode()},
        symlinks={"up": "../../etc"},
        hardlinks={"hard": "/etc/shadow"},
        mode="w",
    )
    dest = tmp_path / "tar-out"
    dest.mkdir()
    report = extract_archive(tarred, dest, ArchiveQuotas())
    assert {r.path: r.reason for r in report.refused} == {
        "up": "archive_link",
        "hard": "archive_link",
    }
    assert not any(p.is_symlink() for p in dest.rglob("*"))


def test_device_entry_in_tar_is_refused(tmp_path: Path) -> None:
    archive = tar_with(tmp_path / "dev.tar.gz", {"ok.py": GOOD.encode()}, devices=["dev/null"])
    dest, extracted, refused = _extract(archive, tmp_path)
    assert refused == {"dev/null": "archive_special"}
    assert extracted == ["ok.py"]
    assert _tree(dest) == ["ok.py"]


def test_nesting_deeper_than_the_quota_is_refused_and_shallower_levels_kept(tmp_path: Path) -> None:
    archive = nested_zip(tmp_path / "deep.zip", depth=4)
    dest, extracted, refused = _extract(archive, tmp_path, max_depth=2)
    assert extracted == ["level1.py", "inner2.zip!/level2.py"]
    assert refused == {"inner2.zip!/inner3.zip": "archive_depth"}
    assert (dest / "inner2.zip!" / "level2.py").read_text() == GOOD


def test_file_count_quota_stops_the_archive_and_reports_it(tmp_path: Path) -> None:
    archive = zip_with(tmp_path / "many.zip", {f"f{i}.py": b"x = 1\n" for i in range(5)})
    _, extracted, refused = _extract(archive, tmp_path, max_files=3)
    assert extracted == ["f0.py", "f1.py", "f2.py"]
    assert refused == {"f3.py": "archive_file_count"}


def test_total_size_quota_is_counted_while_inflating(tmp_path: Path) -> None:
    archive = tar_with(tmp_path / "big.tar", {"a.txt": b"a" * 600, "b.txt": b"b" * 600}, mode="w")
    dest, extracted, refused = _extract(archive, tmp_path, max_total_bytes=1000)
    assert extracted == ["a.txt"]
    assert refused == {"b.txt": "archive_total_size"}
    assert _tree(dest) == ["a.txt"]


def test_tar_gz_bomb_is_refused_by_the_ratio_of_the_whole_stream(tmp_path: Path) -> None:
    archive = tar_with(
        tmp_path / "bomb.tgz", {"ok.py": GOOD.encode(), "zeros.txt": b"0" * 30_000_000}
    )
    _, extracted, refused = _extract(archive, tmp_path)
    assert extracted == ["ok.py"]
    assert refused == {"zeros.txt": "archive_ratio"}


def test_unreadable_archive_is_one_refusal_not_an_error(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"PK\x03\x04 not really a zip")
    _, extracted, refused = _extract(archive, tmp_path)
    assert extracted == []
    assert refused == {"": "archive_corrupt"}


def test_archive_names_are_recognised_by_suffix() -> None:
    assert all(is_archive(n) for n in ("a.zip", "b.TAR", "c.tar.gz", "d.tgz"))
    assert not is_archive("e.gz") and not is_archive("zip.py")


def test_extracted_files_are_private_to_the_user(tmp_path: Path) -> None:
    archive = zip_with(tmp_path / "m.zip", {"ok.py": GOOD.encode()})
    dest, _, _ = _extract(archive, tmp_path)
    assert os.stat(dest / "ok.py").st_mode & 0o077 == 0


def test_a_damaged_member_is_refused_alone_and_the_others_are_kept(tmp_path: Path) -> None:
    archive = zip_with(tmp_path / "d.zip", {"bad.py": b"a = 1\n" * 50, "ok.py": GOOD.encode()})
    data = bytearray(archive.read_bytes())
    at = data.index(b"bad.py") + len("bad.py") + 10  # inside bad.py's deflated bytes
    data[at] ^= 0xFF
    archive.write_bytes(bytes(data))
    dest, extracted, refused = _extract(archive, tmp_path)
    assert refused == {"bad.py": "archive_corrupt"}
    assert extracted == ["ok.py"]
    assert _tree(dest) == ["ok.py"]
