"""A plugin's principal is narrowed to its manifest's permissions wherever the stdlib acts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from aifr.errors import AifrError, PluginPermissionError
from aifr.invocation import RequestContext
from aifr.invocation.context import bind_request, unbind_request
from aifr.stdlib import Permissions, PermissionTable
from stdlib_kit import Lib, build_lib


@contextmanager
def acting_as(principal: str) -> Iterator[None]:
    token = bind_request(RequestContext(principal=principal))
    try:
        yield
    finally:
        unbind_request(token)


@pytest.fixture
def lib(tmp_path: Path) -> Lib:
    root = tmp_path / "project"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "a.txt").write_text("inside\n")
    (root / "private.txt").write_text("outside\n")
    table = PermissionTable(
        [
            Permissions(
                principal="plugin:notes",
                fs_roots=(root / "notes",),
                hosts=("*.example.com",),
                commands=("echo",),
            )
        ]
    )
    return build_lib(root, permissions=table, exec_allow_commands=["echo", "true"])


def call_as(lib: Lib, principal: str, capability_id: str, **inputs: Any) -> Any:
    with acting_as(principal):
        return lib.call(capability_id, inputs, principal=principal)


def test_a_plugin_reads_inside_its_root_and_nowhere_else(lib: Lib) -> None:
    assert (
        call_as(lib, "plugin:notes", "io.fs.read_file", path="notes/a.txt")["content"] == "inside\n"
    )
    with pytest.raises(PluginPermissionError) as caught:
        call_as(lib, "plugin:notes", "io.fs.read_file", path="private.txt")
    assert caught.value.code == "plugin.permission_denied"
    assert caught.value.details["permission"] == "fs_roots"
    with pytest.raises(PluginPermissionError):
        call_as(lib, "plugin:notes", "io.fs.read_file", path=str(lib.root / "private.txt"))


def test_other_principals_are_not_narrowed(lib: Lib) -> None:
    assert call_as(lib, "alice", "io.fs.read_file", path="private.txt")["content"] == "outside\n"


def test_an_unknown_plugin_principal_is_granted_nothing(lib: Lib) -> None:
    with pytest.raises(PluginPermissionError):
        call_as(lib, "plugin:ghost", "io.fs.read_file", path="notes/a.txt")


def test_a_plugin_cannot_move_a_file_out_of_its_root(lib: Lib) -> None:
    with pytest.raises(PluginPermissionError):
        call_as(lib, "plugin:notes", "io.fs.move", source="notes/a.txt", destination="a.txt")
    assert (lib.root / "notes" / "a.txt").read_text() == "inside\n"
    assert not (lib.root / "a.txt").exists()


def test_a_plugin_cannot_undo_a_change_made_outside_its_root(lib: Lib) -> None:
    written = call_as(lib, "alice", "io.fs.write_file", path="private.txt", content="changed\n")
    token = written["undo"]["token"]
    with pytest.raises(PluginPermissionError):
        call_as(lib, "plugin:notes", "io.fs.restore", token=token)
    assert (lib.root / "private.txt").read_text() == "changed\n"


def test_a_plugin_runs_only_its_commands_and_only_inside_its_root(lib: Lib) -> None:
    done = call_as(lib, "plugin:notes", "sys.exec", argv=["echo", "hi"], cwd="notes")
    assert done["stdout"] == "hi\n"
    with pytest.raises(PluginPermissionError) as caught:
        call_as(lib, "plugin:notes", "sys.exec", argv=["true"], cwd="notes")
    assert caught.value.details["permission"] == "commands"
    with pytest.raises(PluginPermissionError) as caught:
        call_as(lib, "plugin:notes", "sys.exec", argv=["echo", "hi"], cwd=".")
    assert caught.value.details["permission"] == "fs_roots"


def test_a_plugin_host_check_runs_before_any_lookup(lib: Lib) -> None:
    built = build_lib(
        lib.root,
        permissions=PermissionTable(
            [Permissions(principal="plugin:notes", hosts=("api.example.com",))]
        ),
        net_allow_hosts=["*.example.com"],
    )
    with pytest.raises(AifrError) as caught:
        call_as(built, "plugin:notes", "io.net.http_get", url="https://www.example.com/")
    assert caught.value.code == "plugin.permission_denied"
    assert caught.value.details["host"] == "www.example.com"


@pytest.mark.parametrize(
    ("pattern", "host", "allowed"),
    [
        ("*.example.com", "api.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "evil-example.com", False),
        ("api.example.com", "API.Example.com.", True),
    ],
)
def test_host_patterns_match_names_and_subdomains_only(
    pattern: str, host: str, allowed: bool
) -> None:
    limits = Permissions(principal="plugin:x", hosts=(pattern,))
    if allowed:
        limits.check_host(host)
    else:
        with pytest.raises(PluginPermissionError):
            limits.check_host(host)
