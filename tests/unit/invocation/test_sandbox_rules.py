"""The sandbox's rules as data: grants around hidden paths, narrowing, refusal parsing, BPF."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from aifr.invocation import seccomp
from aifr.invocation.sandbox_refusals import refused_paths
from aifr.invocation.sandbox_rules import Grant, SandboxRules, grants


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / ".aifr").mkdir(parents=True)
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "README.md").write_text("hi")
    (root / "policies").mkdir()
    return root


def _rules(project: Path) -> SandboxRules:
    return SandboxRules((project,), (project,), (project / ".aifr", project / "policies"))


def test_a_root_holding_hidden_paths_is_listed_only_and_its_other_entries_granted_whole(
    project: Path,
) -> None:
    found = grants(_rules(project))
    assert found == [
        Grant(project, "list", True),
        Grant(project / "README.md", "write", False),
        Grant(project / "src", "write", True),
    ]


def test_a_hidden_path_deep_inside_a_root_is_walked_towards(project: Path) -> None:
    rules = SandboxRules((project,), (), (project / "src" / "pkg",))
    found = {(g.path, g.access) for g in grants(rules)}
    assert (project / "src", "list") in found
    assert (project / "src" / "pkg", "read") not in found
    assert (project / ".aifr", "read") in found


def test_a_symlink_inside_a_listed_root_is_never_granted_itself(project: Path) -> None:
    (project / "link").symlink_to("/etc")
    assert all(g.path != project / "link" for g in grants(_rules(project)))


def test_creating_directly_in_a_folder_holding_a_hidden_path_counts_as_refused(
    project: Path,
) -> None:
    rules = _rules(project)
    assert rules.is_writable(project / "README.md")
    assert not rules.is_writable(project / "new.txt")
    assert rules.is_writable(project / "src" / "new.txt")
    assert not rules.is_readable(project / ".aifr" / "aifr.db")


def test_narrowing_limits_writes_to_what_is_named(project: Path) -> None:
    narrowed = _rules(project).narrowed([project / "src"], None)
    assert narrowed.read_roots == (project / "src",)
    assert narrowed.write_roots == (project / "src",)
    assert not narrowed.is_readable(project / "README.md")
    only_writes = _rules(project).narrowed(None, [project / "src" / "pkg"])
    assert only_writes.is_readable(project / "README.md")
    assert not only_writes.is_writable(project / "README.md")


def test_nested_trees_are_granted_once_outer_first(project: Path) -> None:
    rules = SandboxRules((project, project / "src"), (project / "src",), ())
    assert rules.trees() == [(project, "read"), (project / "src", "write")]
    inner_read = SandboxRules((project, project / "src"), (project,), ())
    assert inner_read.trees() == [(project, "write")]


def test_refused_paths_come_from_the_commands_errors_and_only_where_the_rules_deny(
    project: Path,
) -> None:
    stderr = (
        b"cat: .aifr/aifr.db: Permission denied\n"
        b"sh: 1: cannot create /outside/x: Permission denied\n"
        b"cat: src/mine.txt: Permission denied\n"
        b"PermissionError: [Errno 13] Permission denied: '/etc/shadow'\n"
    )
    rules = SandboxRules((project,), (project,), (project / ".aifr", Path("/etc/shadow")))
    found = refused_paths(stderr, str(project), rules)
    assert found == (str(project / ".aifr" / "aifr.db"), "/outside/x", "/etc/shadow")


def test_the_seccomp_program_is_whole_instructions_with_forward_jumps() -> None:
    if not seccomp.is_supported():
        pytest.skip("no system-call table for this architecture")
    for network in (False, True):
        program = seccomp.filter_program(network=network)
        assert program is not None
        assert len(program) % 8 == 0
        instructions = [
            struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)
        ]
        count = len(instructions)
        for index, (code, jt, jf, _) in enumerate(instructions):
            if code & 0x07 == 0x05:  # a jump lands on an instruction of the program
                assert index + 1 + max(jt, jf) < count
        assert instructions[-1][0] == 0x06  # the program ends in a return
        assert instructions[-4] == (0x06, 0, 0, 0x7FFF0000)  # ALLOW is reachable


def test_narrowing_through_a_symlink_never_widens(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (project / "src" / "away").symlink_to(outside)
    narrowed = _rules(project).narrowed([project / "src" / "away"], [project / "src" / "away"])
    assert narrowed.read_roots == ()
    assert narrowed.write_roots == ()
    assert not narrowed.is_readable(outside)
