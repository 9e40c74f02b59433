"""Tool names: capability ids, or portable names every client accepts, and back."""

from __future__ import annotations

import random

from aifr.transports.mcp.naming import PORTABLE_NAME, ToolNames, ToolNaming, portable_name

IDS = ["io.fs.read_file", "workflow.rotate-config", "aifr.approvals.status", "shop.greet"]


def test_ids_naming_lists_every_tool_under_its_id() -> None:
    names = ToolNames(IDS)

    assert [names.listed(i) for i in IDS] == IDS
    assert names.resolve("shop.greet") == "shop.greet"


def test_portable_names_replace_every_other_character_and_pass_the_strict_rule() -> None:
    names = ToolNames([*IDS, "odd name/with:chars é"], ToolNaming.PORTABLE)

    assert names.listed("io.fs.read_file") == "io_fs_read_file"
    assert names.listed("workflow.rotate-config") == "workflow_rotate-config"
    assert names.listed("aifr.approvals.status") == "aifr_approvals_status"
    assert names.listed("odd name/with:chars é") == "odd_name_with_chars__"
    assert all(PORTABLE_NAME.fullmatch(names.listed(i)) for i in names.ids)


def test_a_call_may_name_the_listed_name_or_the_id() -> None:
    names = ToolNames(IDS, ToolNaming.PORTABLE)

    assert names.resolve("io_fs_read_file") == "io.fs.read_file"
    assert names.resolve("io.fs.read_file") == "io.fs.read_file"
    assert names.resolve("no_such_tool") == "no_such_tool"  # unknown: reported as given


def test_ids_that_would_share_a_name_get_distinct_digests_whatever_their_order() -> None:
    clashing = ["a.b", "a_b", "a-b"]
    names = ToolNames(clashing, ToolNaming.PORTABLE)
    shuffled = clashing[:]
    random.Random(7).shuffle(shuffled)
    again = ToolNames(shuffled, ToolNaming.PORTABLE)

    listed = [names.listed(i) for i in clashing]
    assert listed[2] == "a-b"  # no clash: kept as is
    assert listed[0] != listed[1]
    assert all(name.startswith("a_b_") and len(name) == 12 for name in listed[:2])
    assert [again.listed(i) for i in clashing] == listed
    assert [names.resolve(n) for n in listed] == clashing


def test_a_name_longer_than_64_characters_is_cut_and_keeps_a_digest_of_the_whole_id() -> None:
    long_a = "svc." + "x" * 80 + ".a"
    long_b = "svc." + "x" * 80 + ".b"
    names = ToolNames([long_a, long_b], ToolNaming.PORTABLE)

    assert len(names.listed(long_a)) == 64
    assert names.listed(long_a) != names.listed(long_b)
    assert PORTABLE_NAME.fullmatch(names.listed(long_a))
    assert names.resolve(names.listed(long_b)) == long_b
    assert portable_name("x" * 64) == "x" * 64
