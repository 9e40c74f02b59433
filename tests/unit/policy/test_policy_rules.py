"""The input-condition language and glob sets, operator by operator."""

from __future__ import annotations

import posixpath
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aifr.errors import PolicyError
from aifr.policy import GlobSet, InputCondition, is_path_under
from aifr.policy.loader import compile_conditions
from aifr.policy.rules import glob_problem, normalize_path


@pytest.mark.parametrize(
    ("value", "root", "expected"),
    [
        ("/srv/data/a", "/srv/data", True),
        ("/srv/data", "/srv/data", True),
        ("/srv/data/", "/srv/data/", True),
        ("/srv/database", "/srv/data", False),
        ("/srv/data/../etc", "/srv/data", False),
        ("/srv/./data//a", "/srv/data", True),
        ("srv/data/a", "/srv/data", False),
        ("docs/a.md", ".", True),
        ("../outside", ".", False),
        ("a/../../outside", ".", False),
        ("/srv/data/\x00a", "/srv/data", False),
        ("//etc/shadow", "/etc", True),
        ("//srv/data/a", "//srv/data", True),
        ("/etc/shadow", "//etc", True),
    ],
)
def test_path_under_root_is_lexical_and_refuses_escapes(
    value: str, root: str, expected: bool
) -> None:
    assert is_path_under(value, root) is expected


@given(st.text(alphabet="a./", max_size=12))
def test_path_normalization_is_normpath_with_one_leading_slash(path: str) -> None:
    expected = posixpath.normpath(path)
    if expected.startswith("//"):
        expected = "/" + expected.lstrip("/")
    assert normalize_path(path) == expected


@pytest.mark.parametrize(
    ("operators", "inputs", "expected"),
    [
        ({"eq": 1}, {"x": 1}, True),
        ({"eq": 1}, {"x": True}, False),
        ({"eq": True}, {"x": 1}, False),
        ({"ne": "a"}, {"x": "b"}, True),
        ({"in": [1, 2]}, {"x": 2}, True),
        ({"not_in": [1, 2]}, {"x": 3}, True),
        ({"lt": 5}, {"x": 4.5}, True),
        ({"ge": "m"}, {"x": "z"}, True),
        ({"gt": 5}, {"x": "9"}, False),
        ({"gt": 0}, {"x": True}, False),
        ({"glob": "*.txt"}, {"x": "a.txt"}, True),
        ({"glob": "*.txt"}, {"x": 3}, False),
        ({"regex": re.compile(r"^\d+$")}, {"x": "123"}, True),
        ({"under": "/srv"}, {"x": "/srv/a"}, True),
        ({"not_under": "/srv"}, {"x": "/etc/a"}, True),
        ({"exists": False}, {}, True),
        ({"exists": False}, {"x": None}, False),
        ({"eq": None}, {"x": None}, True),
        ({"eq": None}, {}, False),
        ({"ge": 1, "le": 3}, {"x": 2}, True),
        ({"ge": 1, "le": 3}, {"x": 4}, False),
    ],
)
def test_input_operators(operators: dict[str, Any], inputs: dict[str, Any], expected: bool) -> None:
    assert InputCondition("x", operators).matches(inputs) is expected


def test_dotted_paths_reach_into_mappings_and_lists() -> None:
    condition = InputCondition("options.targets.1", {"eq": "b"})
    assert condition.matches({"options": {"targets": ["a", "b"]}})
    assert not condition.matches({"options": {"targets": ["a"]}})
    assert condition.why_not({"options": {}}) == "input 'options.targets.1' is absent"


def test_a_failing_condition_says_which_test_failed() -> None:
    condition = InputCondition("n", {"lt": 10})
    assert condition.why_not({"n": 12}) == "input 'n' = 12 fails lt 10"


def test_glob_sets_match_literals_and_wildcards_on_the_whole_string() -> None:
    globs = GlobSet(["io.fs.read", "io.net.*", "db.?rop"])
    assert globs.matches("io.fs.read")
    assert globs.matches("io.net.get")
    assert globs.matches("db.drop")
    assert not globs.matches("io.fs.read.more")
    assert not globs.matches("xio.net.get")
    assert globs.describe() == "any of ['io.fs.read', 'io.net.*', 'db.?rop']"


def test_grant_constraints_compile_with_the_policy_language() -> None:
    (condition,) = compile_conditions({"path": {"under": "/srv"}})
    assert condition.matches({"path": "/srv/x"})
    shorthand = compile_conditions({"mode": ["a", "b"], "n": 3})
    assert [c.operators for c in shorthand] == [{"in": ["a", "b"]}, {"eq": 3}]
    with pytest.raises(PolicyError):
        compile_conditions({"path": {"within": "/srv"}})


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("", "a glob cannot be empty"),
        ("io.[fs", "unclosed '[' at position 3 (write '[[]' to match a literal '[')"),
        ("[]", "unclosed '[' at position 0 (write '[[]' to match a literal '[')"),
        ("[!]", "unclosed '[' at position 0 (write '[[]' to match a literal '[')"),
        ("[z-a]", "range 'z-a' in '[z-a]' is reversed and matches nothing"),
        ("x[!0-9a][9-0]", "range '9-0' in '[9-0]' is reversed and matches nothing"),
    ],
)
def test_glob_problem_names_what_fnmatch_would_silently_accept(pattern: str, problem: str) -> None:
    assert glob_problem(pattern) == problem


@pytest.mark.parametrize(
    "pattern", ["io.*", "db.?rop", "[id]*", "[[]x", "[]-a]", "[a-c-e]", "[-a]", "[a-]", "x[!a-c]"]
)
def test_glob_problem_accepts_every_pattern_fnmatch_reads_as_intended(pattern: str) -> None:
    assert glob_problem(pattern) is None


def test_grant_constraints_refuse_invalid_globs_and_empty_roots() -> None:
    with pytest.raises(PolicyError) as info:
        compile_conditions({"path": {"glob": "*.[tx"}})
    assert info.value.details["field"] == "constraints.path.glob"
    with pytest.raises(PolicyError) as info:
        compile_conditions({"path": {"not_under": ""}})
    assert info.value.details["field"] == "constraints.path.not_under"
