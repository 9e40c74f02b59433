"""The process sandbox of sys.exec, on the real kernel: Landlock, bubblewrap, and none.

Each escape is tried under every backend available here, and the same command is run
with ``sandbox = "none"`` to show that it does escape there, so each test tests something.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aifr.app import build_app
from aifr.config.project import init_project
from aifr.errors import ErrorCode, ExecutionTimeoutError, SandboxRefusalError
from aifr.invocation.sandbox_backends import BackendStatus, LaunchPlanner, detect
from aifr.invocation.sandbox_rules import SandboxRules
from stdlib_kit import Lib, build_lib, serve_http

PY = sys.executable
BACKENDS = ["landlock", "bubblewrap"]


def _skip_unless_available(backend: str) -> None:
    status = detect(backend)  # type: ignore[arg-type]
    if status.refusal is not None:
        pytest.skip(status.refusal)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    _skip_unless_available(request.param)
    return str(request.param)


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """A home with a planted SSH key, a project inside it, and a folder outside both."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("PLANTED-KEY\n")
    project = home / "proj"
    (project / ".aifr").mkdir(parents=True)
    (project / ".aifr" / "aifr.db").write_text("STATE-DB\n")
    (project / "policies").mkdir()
    (project / "policies" / "default.yaml").write_text("POLICY\n")
    (project / "work").mkdir()
    (project / "work" / "notes.txt").write_text("NOTES\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("OUTSIDE-SECRET\n")
    return {"home": home, "project": project, "outside": outside}


def _lib(world: dict[str, Path], sandbox: str, **overrides: Any) -> Lib:
    """The stdlib over the project (and, as a root, the home holding it) under ``sandbox``."""
    settings: dict[str, Any] = {
        "fs_roots": [world["project"], world["home"]],
        "exec_allow_commands": ["cat", "sh", PY],
        "exec_sandbox": sandbox,
        "exec_timeout_s": 10,
        "home": world["home"],
        "reserved": [world["project"] / "policies", world["project"] / "workflows"],
    }
    settings.update(overrides)
    return build_lib(world["project"], **settings)


def _cat(lib: Lib, path: Path) -> dict[str, Any]:
    out: dict[str, Any] = lib.call("sys.exec", {"argv": ["cat", str(path)], "cwd": "work"})
    return out


SECRETS = {
    "outside_the_roots": ("outside", "secret.txt", "OUTSIDE-SECRET"),
    "a_planted_ssh_key": ("home", ".ssh/id_rsa", "PLANTED-KEY"),
    "the_state_database": ("project", ".aifr/aifr.db", "STATE-DB"),
    "the_policies": ("project", "policies/default.yaml", "POLICY"),
}


@pytest.mark.parametrize("what", sorted(SECRETS))
def test_a_command_cannot_read_what_the_sandbox_hides(
    world: dict[str, Path], backend: str, what: str
) -> None:
    base, relative, content = SECRETS[what]
    target = world[base] / relative
    confined = _cat(_lib(world, backend), target)
    assert confined["exit_code"] != 0
    assert content not in confined["stdout"]
    assert confined["sandbox"] == backend
    assert str(target) in confined["refused"]["paths"]
    unconfined = _cat(_lib(world, "none"), target)
    assert unconfined["sandbox"] == "none"
    assert unconfined["stdout"] == content + "\n"


def test_a_command_still_reads_and_writes_inside_the_roots(
    world: dict[str, Path], backend: str
) -> None:
    lib = _lib(world, backend)
    script = "cat notes.txt && echo more >> notes.txt && mkdir -p out && echo new > out/n.txt"
    out = lib.call("sys.exec", {"argv": ["sh", "-c", script], "cwd": "work"})
    assert out["exit_code"] == 0, out["stderr"]
    assert out["stdout"] == "NOTES\n"
    assert (world["project"] / "work" / "notes.txt").read_text() == "NOTES\nmore\n"
    assert (world["project"] / "work" / "out" / "n.txt").read_text() == "new\n"
    assert out["refused"] == {"paths": [], "hosts": []}


@pytest.mark.parametrize(
    "where",
    ["outside/planted.txt", "project/policies/allow-all.yaml", "project/workflows/evil.yaml",
     "project/.aifr/aifr.db", "home/.ssh/authorized_keys"],
)  # fmt: skip
def test_a_command_cannot_write_outside_the_roots_or_into_reserved_paths(
    world: dict[str, Path], backend: str, where: str
) -> None:
    base, _, relative = where.partition("/")
    target = world[base] / relative
    before = target.read_text() if target.exists() else None
    script = f"mkdir -p '{target.parent}'; echo planted > '{target}'"
    _lib(world, backend).call("sys.exec", {"argv": ["sh", "-c", script], "cwd": "work"})
    assert (target.read_text() if target.exists() else None) == before
    _lib(world, "none").call("sys.exec", {"argv": ["sh", "-c", script], "cwd": "work"})
    assert target.read_text() == "planted\n"


def test_read_and_write_paths_narrow_one_call(world: dict[str, Path], backend: str) -> None:
    (world["project"] / "work" / "other.txt").write_text("OTHER\n")
    (world["project"] / "work" / "out").mkdir()
    lib = _lib(world, backend)
    inputs = {"cwd": "work", "read_paths": ["work/notes.txt"], "write_paths": ["work/out"]}
    read = lib.call("sys.exec", {**inputs, "argv": ["sh", "-c", "cat notes.txt; cat other.txt"]})
    assert read["stdout"] == "NOTES\n"
    script = "echo a > out/a.txt; echo b >> notes.txt"
    lib.call("sys.exec", {**inputs, "argv": ["sh", "-c", script]})
    assert (world["project"] / "work" / "out" / "a.txt").read_text() == "a\n"
    assert (world["project"] / "work" / "notes.txt").read_text() == "NOTES\n"
    wide = lib.call("sys.exec", {"argv": ["cat", "other.txt"], "cwd": "work"})
    assert wide["stdout"] == "OTHER\n"


_FETCH = (
    "import sys, urllib.request\n"
    "handlers = [] if sys.argv[2] == 'proxy' else [urllib.request.ProxyHandler({})]\n"
    "opener = urllib.request.build_opener(*handlers)\n"
    "print(opener.open(sys.argv[1], timeout=5).read().decode())\n"
)


@pytest.fixture
def http_url() -> Iterator[str]:
    with serve_http() as base:
        yield f"{base}/ok"


def _fetch(lib: Lib, url: str, route: str, *, network: bool) -> dict[str, Any]:
    argv = [PY, "-I", "-S", "-c", _FETCH, url, route]
    out: dict[str, Any] = lib.call("sys.exec", {"argv": argv, "network": network, "cwd": "work"})
    return out


def _net_lib(world: dict[str, Path], sandbox: str, hosts: list[str]) -> Lib:
    return _lib(
        world, sandbox, net_allow_hosts=hosts, net_allow_schemes=["http"], net_allow_private=True
    )


def test_network_is_off_unless_the_call_asks_for_it(
    world: dict[str, Path], backend: str, http_url: str
) -> None:
    confined = _fetch(_net_lib(world, backend, ["127.0.0.1"]), http_url, "direct", network=False)
    assert confined["exit_code"] != 0
    assert "hello" not in confined["stdout"]
    unconfined = _fetch(_net_lib(world, "none", ["127.0.0.1"]), http_url, "direct", network=False)
    assert unconfined["stdout"] == "hello\n"


def test_an_allowed_host_is_reached_only_through_the_proxy(
    world: dict[str, Path], backend: str, http_url: str
) -> None:
    lib = _net_lib(world, backend, ["127.0.0.1"])
    proxied = _fetch(lib, http_url, "proxy", network=True)
    assert proxied["stdout"] == "hello\n", proxied["stderr"]
    (seen,) = proxied["connections"]
    assert seen["host"] == "127.0.0.1"
    assert seen["allowed"] is True
    direct = _fetch(lib, http_url, "direct", network=True)
    assert direct["exit_code"] != 0
    assert direct["connections"] == []
    unconfined = _fetch(_net_lib(world, "none", ["127.0.0.1"]), http_url, "direct", network=True)
    assert unconfined["stdout"] == "hello\n"


def test_a_host_that_is_not_allowed_is_refused_by_the_proxy_and_reported(
    world: dict[str, Path], backend: str, http_url: str
) -> None:
    out = _fetch(_net_lib(world, backend, ["example.org"]), http_url, "proxy", network=True)
    assert out["exit_code"] != 0
    assert out["refused"]["hosts"] == ["127.0.0.1"]
    assert out["connections"][0]["reason"] == "host_not_allowed"


_PTRACE = (
    "import ctypes\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "print(libc.syscall(101, 0, 0, 0, 0), ctypes.get_errno())\n"  # ptrace(PTRACE_TRACEME)
)


def test_the_seccomp_filter_refuses_ptrace(world: dict[str, Path], backend: str) -> None:
    confined = _lib(world, backend).call("sys.exec", {"argv": [PY, "-I", "-S", "-c", _PTRACE]})
    assert confined["stdout"].split() == ["-1", "1"]  # EPERM
    unconfined = _lib(world, "none").call("sys.exec", {"argv": [PY, "-I", "-S", "-c", _PTRACE]})
    assert unconfined["stdout"].split() == ["0", "0"]


_SYSCALL = (
    "import ctypes, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.syscall.restype = ctypes.c_long\n"
    "args = [ctypes.c_long(int(a)) if a.lstrip('-').isdigit() else a.encode() for a in sys.argv[1:]]\n"
    "print(libc.syscall(*args), ctypes.get_errno())\n"
)
_DENIED_CALLS = {
    # mount(NULL, "/nonexistent", NULL, 0, NULL): root unconfined gets ENOENT (2)
    "mount": ["165", "0", "/nonexistent-aifr-target", "0", "0", "0"],
    # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0): the keyring's serial
    "keyctl": ["250", "0", "-4", "0"],
    # unshare(CLONE_NEWUSER): a new user namespace
    "unshare": ["272", str(0x10000000)],
}


@pytest.mark.parametrize("call", sorted(_DENIED_CALLS))
def test_the_seccomp_filter_refuses_mount_keyrings_and_namespaces(
    world: dict[str, Path], backend: str, call: str
) -> None:
    argv = [PY, "-I", "-S", "-c", _SYSCALL, *_DENIED_CALLS[call]]
    confined = _lib(world, backend).call("sys.exec", {"argv": argv})
    assert confined["stdout"].split() == ["-1", "1"], confined["stderr"]  # EPERM
    unconfined = _lib(world, "none").call("sys.exec", {"argv": argv})
    result, error = unconfined["stdout"].split()
    assert error != "1" and (call == "mount" or int(result) >= 0), unconfined["stdout"]


def _marked(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_a_fork_bomb_is_stopped_and_leaves_nothing_behind(
    world: dict[str, Path], backend: str
) -> None:
    marker = f"aifr-bomb-{backend}-{time.monotonic_ns()}"
    bomb = f"import os  # {marker}\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    lib = _lib(world, backend)
    with pytest.raises(ExecutionTimeoutError):
        lib.call("sys.exec", {"argv": [PY, "-I", "-S", "-c", bomb], "timeout_s": 1.5})
    deadline = time.monotonic() + 10
    while _marked(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _marked(marker) == []


_SPAWN = (
    "import subprocess, sys\n"
    "children = [subprocess.Popen(['/bin/sleep', '1']) for _ in range(int(sys.argv[1]))]\n"
    "print(len(children))\n"
)


def test_the_process_limit_holds_under_the_sandbox(world: dict[str, Path], backend: str) -> None:
    lib = _lib(world, backend)
    small = lib.call("sys.exec", {"argv": [PY, "-I", "-S", "-c", _SPAWN, "8"]})
    if small["process_limit"] != "cgroup":  # RLIMIT_NPROC counts all the user's processes
        pytest.skip(f"no pids cgroup here (process_limit={small['process_limit']})")
    assert small["stdout"] == "8\n", small["stderr"]
    many = lib.call("sys.exec", {"argv": [PY, "-I", "-S", "-c", _SPAWN, "100"]})
    assert many["exit_code"] != 0  # 64 processes at most (SandboxLimits.processes)
    assert "100" not in many["stdout"]


_HOG = "blocks = [bytearray(64 * 1024 * 1024) for _ in range(int(__import__('sys').argv[1]))]\nprint('held')\n"


def test_a_memory_hog_is_stopped_under_the_sandbox(world: dict[str, Path], backend: str) -> None:
    lib = _lib(world, backend, exec_max_memory_mb=256)
    hog = lib.call("sys.exec", {"argv": [PY, "-I", "-S", "-c", _HOG, "8"]})  # 512 MiB
    assert hog["exit_code"] != 0
    assert "MemoryError" in hog["stderr"]
    modest = lib.call("sys.exec", {"argv": [PY, "-I", "-S", "-c", _HOG, "1"]})
    assert modest["stdout"] == "held\n", modest["stderr"]


def test_auto_picks_a_backend_that_is_available_here() -> None:
    status = detect("auto")
    assert status.backend in ("landlock", "bubblewrap", "none")
    assert status.backend not in status.unavailable
    if status.backend == "none":
        assert status.warning is not None


def test_a_configured_backend_that_is_missing_refuses_commands() -> None:
    missing = BackendStatus(
        mode="bubblewrap",
        backend="bubblewrap",
        unavailable={"bubblewrap": "bwrap is not installed"},
        landlock_abi=0,
        seccomp=True,
        bwrap=None,
        refusal="sandbox 'bubblewrap' is configured but unavailable: bwrap is not installed",
    )
    with pytest.raises(SandboxRefusalError) as caught:
        LaunchPlanner(missing).launch(["/bin/true"], SandboxRules((), (), ()), proxy_port=None)
    assert caught.value.code is ErrorCode.EXECUTION_REFUSED
    assert caught.value.rule == "sandbox_unavailable"


_NO_NAMESPACES = r"""
import ctypes, json, os
from aifr.errors import SandboxRefusalError
from aifr.invocation import seccomp
from aifr.invocation.sandbox import Sandbox

class Prog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

bpf = seccomp.filter_program(network=False)
buffer = ctypes.create_string_buffer(bpf, len(bpf))
prog = Prog(len(bpf) // 8, ctypes.cast(buffer, ctypes.c_void_p))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0 and libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0
found = {}
for mode in ("bubblewrap", "none"):
    try:
        done = Sandbox(allow_commands=["true"], mode=mode).run(["true"], cwd_fd=os.open("/", os.O_RDONLY))
        found[mode] = {"exit_code": done.returncode, "sandbox": done.sandbox}
    except SandboxRefusalError as exc:
        found[mode] = {"rule": exc.rule}
print(json.dumps(found))
"""


def test_where_namespaces_are_denied_a_configured_bubblewrap_refuses_commands() -> None:
    # the kernel refuses bwrap its namespaces (aifr's own seccomp filter, loaded first, as
    # many container hosts do): no mock, the real probe fails
    if detect("bubblewrap").bwrap is None:
        pytest.skip("bwrap is not installed")
    done = subprocess.run(
        [PY, "-c", _NO_NAMESPACES], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "bubblewrap": {"rule": "sandbox_unavailable"},
        "none": {"exit_code": 0, "sandbox": "none"},
    }


def test_the_sandbox_report_joins_the_calls_audit_record(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    if detect("auto").backend == "none":
        pytest.skip("neither Landlock nor bubblewrap is available here")
    project = tmp_path / "proj"
    init_project(project)
    policy = project / "policies" / "default.yaml"
    allow = "  - id: allow-exec\n    when: {capability: sys.exec}\n    decision: ALLOW\n"
    policy.write_text(policy.read_text().replace("rules:\n", "rules:\n" + allow, 1))
    config = project / "aifr.toml"
    config.write_text(config.read_text().replace("allow_commands = []", 'allow_commands = ["cat"]'))
    app = build_app(project, require_project=True)
    try:
        result = app.runtime.invoke("sys.exec", {"argv": ["cat", "aifr.toml"]}, "ci")
        assert result.audit_id is not None
        record = app.ledger.get(result.audit_id)
        assert record is not None
        report = record.event.details["sandbox"]
        assert report == {
            "sandbox": detect("auto").backend,
            "refused": {"paths": [str(config.resolve())], "hosts": []},
            "connections": [],
        }
    finally:
        app.close()


def test_a_command_cannot_read_another_processs_environment(
    world: dict[str, Path], backend: str
) -> None:
    # a process of the same user holding a secret in its environment, as aifr may
    holder = subprocess.Popen(["/bin/sleep", "30"], env={"AIFR_CANARY": "canary-in-environ"})
    try:
        environ = f"/proc/{holder.pid}/environ"
        confined = _lib(world, backend).call("sys.exec", {"argv": ["cat", environ]})
        assert "canary-in-environ" not in confined["stdout"]
        unconfined = _lib(world, "none").call("sys.exec", {"argv": ["cat", environ]})
        assert "canary-in-environ" in unconfined["stdout"]
    finally:
        holder.kill()
        holder.wait()


def test_a_command_cannot_reach_a_unix_socket_inside_a_hidden_folder(
    world: dict[str, Path], backend: str
) -> None:
    # aifr's MCP server listens on .aifr/mcp.sock: a command must not talk to it
    path = world["project"] / ".aifr" / "mcp.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(4)

    def answer() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.sendall(b"hello-from-aifr")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    code = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({str(path)!r})\nprint(s.recv(64))"
    try:
        confined = _lib(world, backend).call("sys.exec", {"argv": [PY, "-I", "-S", "-c", code]})
        assert "hello-from-aifr" not in confined["stdout"]
        unconfined = _lib(world, "none").call("sys.exec", {"argv": [PY, "-I", "-S", "-c", code]})
        assert "hello-from-aifr" in unconfined["stdout"]
    finally:
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(timeout=5)
