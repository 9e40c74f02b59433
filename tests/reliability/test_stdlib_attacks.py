"""Attacks on the standard library: every one is refused or contained, and writes nothing.

Files: traversal spellings, symlinks (final, parent, swapped mid-flight), hardlinks, the
state folder. Network: SSRF to loopback, link-local, metadata and names resolving there,
redirects off the allowlist, oversized and compressed bodies. Processes: fork bombs,
memory and CPU hogs, file-size bombs, output floods, processes that escape the session.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aifr.errors import (
    AifrError,
    ErrorCode,
    ExecutionError,
    ExecutionTimeoutError,
    SandboxRefusalError,
)
from aifr.invocation.sandbox import Sandbox, SandboxLimits
from stdlib_kit import Lib, build_lib, run_in, serve_http, tree

SECRET = b"root:x:0:0:the secret outside the root\n"

TRAVERSALS = [
    "../secret.txt",
    "../../etc/passwd",
    "a/../../../etc/passwd",
    "%2e%2e/%2e%2e/etc/passwd",
    "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "..%2f..%2fetc%2fpasswd",
    "..%5c..%5cetc%5cpasswd",
    "..\\..\\etc\\passwd",
    "\uff0e\uff0e/\uff0e\uff0e/etc/passwd",  # fullwidth dots
    "\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fetc\uff0fpasswd",  # fullwidth dots and slashes
    "\u2025/\u2025/etc/passwd",  # TWO DOT LEADER, NFKC ".."
    "/etc/passwd",
    "//etc/passwd",
    "%2fetc%2fpasswd",
    "....//....//etc/passwd",
    "..././..././etc/passwd",
    "..%c0%af..%c0%afetc/passwd",
    "..;/..;/etc/passwd",
    "notes/\0/../../etc/passwd",
    "",
]
REFUSAL_RULES = {"path_outside_root", "invalid_path", "symlink_refused"}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Lib, Path]]:
    """A root two levels below a folder holding a secret and an etc/passwd decoy."""
    outside = tmp_path
    (outside / "etc").mkdir()
    (outside / "etc" / "passwd").write_bytes(SECRET)
    (outside / "secret.txt").write_bytes(SECRET)
    root = tmp_path / "a" / "root"
    lib = build_lib(root)
    (root / "notes").mkdir()
    yield lib, outside


def _outside_state(outside: Path, root: Path) -> dict[str, object]:
    return {k: v for k, v in tree(outside).items() if not (outside / k).is_relative_to(root)}


def _attempt(lib: Lib, capability_id: str, inputs: dict[str, object]) -> object:
    try:
        return lib.call(capability_id, inputs)
    except SandboxRefusalError as exc:
        assert exc.rule in REFUSAL_RULES, (inputs, exc.rule)
        return exc
    except AifrError as exc:  # contained: the spelling names a missing path inside the root
        assert exc.code in (ErrorCode.EXECUTION_FAILED, ErrorCode.INPUT_INVALID), exc
        return exc


@pytest.mark.parametrize("raw", TRAVERSALS)
def test_traversal_spellings_never_reach_outside_the_root(
    world: tuple[Lib, Path], raw: str
) -> None:
    lib, outside = world
    before = _outside_state(outside, lib.root)
    read = _attempt(lib, "io.fs.read_file", {"path": raw})
    assert not isinstance(read, dict) or SECRET.decode() not in read["content"]
    listing = _attempt(lib, "io.fs.list_dir", {"path": raw})
    assert not isinstance(listing, dict) or "passwd" not in str(listing) or raw.startswith("....")
    _attempt(lib, "io.fs.write_file", {"path": raw, "content": "pwned"})
    _attempt(lib, "io.fs.delete", {"path": raw, "recursive": True})
    _attempt(lib, "io.fs.move", {"source": "notes", "destination": raw})
    assert _outside_state(outside, lib.root) == before


@pytest.mark.parametrize(
    "raw", ["../secret.txt", "%2e%2e/secret.txt", "\uff0e\uff0e/secret.txt", "/etc/passwd"]
)
def test_escaping_spellings_are_refused_as_outside_the_root(
    world: tuple[Lib, Path], raw: str
) -> None:
    lib, _ = world
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("io.fs.read_file", {"path": raw})
    assert caught.value.rule == "path_outside_root"
    assert caught.value.code is ErrorCode.EXECUTION_REFUSED


def test_a_symlink_to_a_file_outside_is_refused_for_every_operation(
    world: tuple[Lib, Path],
) -> None:
    lib, outside = world
    (lib.root / "passwd").symlink_to(outside / "etc" / "passwd")
    for capability_id, inputs in [
        ("io.fs.read_file", {"path": "passwd"}),
        ("io.fs.write_file", {"path": "passwd", "content": "pwned"}),
        ("io.fs.delete", {"path": "passwd"}),
        ("io.fs.move", {"source": "passwd", "destination": "moved"}),
        ("io.fs.move", {"source": "notes", "destination": "passwd", "overwrite": True}),
    ]:
        with pytest.raises(SandboxRefusalError) as caught:
            lib.call(capability_id, inputs)
        assert caught.value.rule == "symlink_refused", capability_id
    assert (outside / "etc" / "passwd").read_bytes() == SECRET
    assert (lib.root / "passwd").is_symlink()


def test_writing_through_a_symlinked_folder_is_refused(world: tuple[Lib, Path]) -> None:
    lib, outside = world
    (lib.root / "escape").symlink_to(outside / "etc", target_is_directory=True)
    before = _outside_state(outside, lib.root)
    for capability_id, inputs in [
        ("io.fs.write_file", {"path": "escape/passwd", "content": "pwned"}),
        ("io.fs.write_file", {"path": "escape/new/file.txt", "content": "pwned"}),
        ("io.fs.read_file", {"path": "escape/passwd"}),
        ("io.fs.list_dir", {"path": "escape"}),
        ("io.fs.delete", {"path": "escape/passwd"}),
        ("io.fs.move", {"source": "notes", "destination": "escape/notes"}),
    ]:
        with pytest.raises(SandboxRefusalError) as caught:
            lib.call(capability_id, inputs)
        assert caught.value.rule == "symlink_refused", capability_id
    assert _outside_state(outside, lib.root) == before


def test_a_hardlink_to_a_file_outside_is_refused(world: tuple[Lib, Path]) -> None:
    lib, outside = world
    os.link(outside / "secret.txt", lib.root / "innocent.txt")
    for capability_id, inputs in [
        ("io.fs.read_file", {"path": "innocent.txt"}),
        ("io.fs.write_file", {"path": "innocent.txt", "content": "pwned"}),
        ("io.fs.delete", {"path": "innocent.txt"}),
    ]:
        with pytest.raises(SandboxRefusalError) as caught:
            lib.call(capability_id, inputs)
        assert caught.value.rule == "hardlink_refused", capability_id
    assert (outside / "secret.txt").read_bytes() == SECRET


def test_a_folder_swapped_for_a_symlink_mid_flight_never_leaks_a_write(
    world: tuple[Lib, Path],
) -> None:
    lib, outside = world
    target_dir = outside / "victim"
    target_dir.mkdir()
    real, link = lib.root / "d", lib.root / "d.link"
    real.mkdir()
    link.symlink_to(target_dir, target_is_directory=True)
    stop = threading.Event()

    def swapper() -> None:
        parked = lib.root / "d.parked"
        while not stop.is_set():
            os.rename(real, parked)
            os.rename(link, real)  # d is now a symlink to the victim folder
            os.rename(real, link)
            os.rename(parked, real)

    thread = threading.Thread(target=swapper)
    thread.start()
    outcomes: set[str] = set()
    try:
        for attempt in range(300):
            try:
                lib.call(
                    "io.fs.write_file",
                    {"path": f"d/f{attempt}.txt", "content": "x", "create_dirs": False},
                )
                outcomes.add("written")
            except SandboxRefusalError as exc:
                outcomes.add(exc.rule)
            except ExecutionError:
                outcomes.add("missing")  # d was parked at that instant
    finally:
        stop.set()
        thread.join(timeout=10)
    assert list(target_dir.iterdir()) == []
    assert outcomes <= {"written", "symlink_refused", "missing"}


def test_reads_racing_a_symlink_swap_never_return_the_secret(world: tuple[Lib, Path]) -> None:
    lib, outside = world
    (lib.root / "f.txt").write_text("public")
    (lib.root / "f.link").symlink_to(outside / "secret.txt")
    stop = threading.Event()

    def swapper() -> None:
        while not stop.is_set():
            os.rename(lib.root / "f.txt", lib.root / "f.parked")
            os.rename(lib.root / "f.link", lib.root / "f.txt")
            os.rename(lib.root / "f.txt", lib.root / "f.link")
            os.rename(lib.root / "f.parked", lib.root / "f.txt")

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        for _ in range(300):
            try:
                out = lib.call("io.fs.read_file", {"path": "f.txt"})
            except (SandboxRefusalError, ExecutionError):
                continue
            assert out["content"] == "public"
    finally:
        stop.set()
        thread.join(timeout=10)


@pytest.mark.parametrize("raw", [".aifr/aifr.db", "./.aifr/fs/keys/x.json", ".aifr"])
def test_the_state_folder_is_off_limits(world: tuple[Lib, Path], raw: str) -> None:
    lib, _ = world
    lib.state.mkdir(exist_ok=True)
    for capability_id, inputs in [
        ("io.fs.write_file", {"path": raw, "content": "forged"}),
        ("io.fs.read_file", {"path": raw}),
        ("io.fs.delete", {"path": raw, "recursive": True}),
        ("io.fs.write_file", {"path": str(lib.root / raw), "content": "forged"}),
    ]:
        with pytest.raises(SandboxRefusalError) as caught:
            lib.call(capability_id, inputs)
        assert caught.value.rule == "path_reserved"


def test_a_folder_holding_the_state_folder_cannot_be_moved_or_deleted(tmp_path: Path) -> None:
    lib = build_lib(tmp_path, state_dir=tmp_path / "proj" / ".aifr")
    (tmp_path / "proj" / ".aifr").mkdir(parents=True)
    (tmp_path / "proj" / "notes.txt").write_text("kept")
    for capability_id, inputs in [
        ("io.fs.move", {"source": "proj", "destination": "elsewhere"}),
        ("io.fs.delete", {"path": "proj", "recursive": True}),
    ]:
        with pytest.raises(SandboxRefusalError) as caught:
            lib.call(capability_id, inputs)
        assert caught.value.rule == "path_reserved"
    assert (tmp_path / "proj" / ".aifr").is_dir()
    assert lib.call("io.fs.read_file", {"path": "proj/notes.txt"})["content"] == "kept"
    assert lib.call("io.fs.list_dir", {"path": "proj"})["entries"]


def test_a_unix_socket_is_refused_as_not_a_file(tmp_path: Path) -> None:
    lib = build_lib(tmp_path / "r")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(lib.root / "sock"))
        with pytest.raises(SandboxRefusalError) as caught:
            lib.call("io.fs.read_file", {"path": "sock"})
    assert caught.value.rule == "not_a_file"


@pytest.mark.parametrize(
    ("capability_id", "inputs"),
    [
        ("io.fs.write_file", {"path": "x" * 300, "content": "y"}),
        ("io.fs.stat", {"path": "x" * 300}),
        ("io.fs.delete", {"path": "x" * 300}),
        ("io.fs.move", {"source": "x" * 300, "destination": "y"}),
    ],
)
def test_a_name_too_long_is_an_execution_error_naming_it(
    tmp_path: Path, capability_id: str, inputs: dict[str, object]
) -> None:
    lib = build_lib(tmp_path / "r")
    with pytest.raises(ExecutionError) as caught:
        lib.call(capability_id, inputs)
    assert caught.value.details["errno"] == "ENAMETOOLONG"


def test_a_root_itself_cannot_be_deleted_or_replaced(world: tuple[Lib, Path]) -> None:
    lib, _ = world
    for capability_id, inputs in [
        ("io.fs.delete", {"path": ".", "recursive": True}),
        ("io.fs.write_file", {"path": str(lib.root), "content": "x"}),
    ]:
        with pytest.raises(SandboxRefusalError) as caught:
            lib.call(capability_id, inputs)
        assert caught.value.rule == "path_is_root"
    assert lib.root.is_dir()


# --- network -------------------------------------------------------------------------


@pytest.fixture
def strict_net(tmp_path: Path) -> Lib:
    """Every SSRF target is allowlisted by name, but private addresses are not allowed."""
    return build_lib(
        tmp_path / "p",
        net_allow_hosts=[
            "127.0.0.1",
            "169.254.169.254",
            "::1",
            "localhost",
            "0.0.0.0",  # noqa: S104  # an SSRF target, not a bind address
            "*.localhost",
        ],
        net_allow_schemes=["http", "https"],
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[::1]:8080/",
        "http://localhost/",
        "http://LOCALHOST./admin",
        "http://0.0.0.0/",
    ],
)
def test_ssrf_to_internal_addresses_is_refused(strict_net: Lib, url: str) -> None:
    with pytest.raises(SandboxRefusalError) as caught:
        strict_net.call("io.net.http_get", {"url": url})
    assert caught.value.rule == "private_address_refused"


@pytest.mark.parametrize(
    "host",
    [
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "64:ff9b::a9fe:a9fe",
    ],
)
def test_ipv4_addresses_wrapped_in_ipv6_are_judged_by_the_ipv4_inside(
    tmp_path: Path, host: str
) -> None:
    lib = build_lib(tmp_path / "p", net_allow_hosts=[host], net_allow_schemes=["http"])
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("io.net.http_get", {"url": f"http://[{host}]/"})
    assert caught.value.rule == "private_address_refused"


@pytest.mark.parametrize("host", ["::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe"])
def test_wrapped_metadata_addresses_are_refused_even_when_private_is_allowed(
    tmp_path: Path, host: str
) -> None:
    lib = build_lib(
        tmp_path / "p", net_allow_hosts=[host], net_allow_schemes=["http"], net_allow_private=True
    )
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("io.net.http_get", {"url": f"http://[{host}]/"})
    assert caught.value.rule == "private_address_refused"


def test_metadata_endpoints_are_refused_even_when_private_addresses_are_allowed(
    tmp_path: Path,
) -> None:
    lib = build_lib(
        tmp_path / "p",
        net_allow_hosts=["169.254.169.254"],
        net_allow_schemes=["http"],
        net_allow_private=True,
    )
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call(
            "io.net.http_request",
            {"url": "http://169.254.169.254/latest/api/token", "method": "PUT"},
        )
    assert caught.value.rule == "private_address_refused"


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://example.com/", "host_not_allowed"),
        ("http://2130706433/", "host_not_allowed"),
        ("http://127.1/", "host_not_allowed"),
        ("http://127.0.0.1.nip.io/", "host_not_allowed"),
        ("http://allowed.test@evil.test/", "host_not_allowed"),
        ("file:///etc/passwd", "scheme_not_allowed"),
        ("ftp://127.0.0.1/", "scheme_not_allowed"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", "scheme_not_allowed"),
    ],
)
def test_unlisted_hosts_and_schemes_are_refused(strict_net: Lib, url: str, rule: str) -> None:
    with pytest.raises(SandboxRefusalError) as caught:
        strict_net.call("io.net.http_get", {"url": url})
    assert caught.value.rule == rule


@pytest.fixture
def local_net(tmp_path: Path) -> Iterator[tuple[Lib, str]]:
    """A real server on 127.0.0.1, reachable because 127.0.0.1 and private addresses are allowed."""
    with serve_http() as base:
        lib = build_lib(
            tmp_path / "p",
            net_allow_hosts=["127.0.0.1", "169.254.169.254"],
            net_allow_schemes=["http"],
            net_allow_private=True,
            net_max_response_bytes=100_000,
        )
        yield lib, base


@pytest.mark.parametrize(
    ("location", "refused_by"),
    [
        ("http://localhost:{port}/ok", "host_not_allowed"),
        ("http://169.254.169.254/latest/meta-data/", "private_address_refused"),
        ("file:///etc/passwd", "scheme_not_allowed"),
        ("https://example.com/", "scheme_not_allowed"),
    ],
)
def test_redirects_off_the_allowlist_are_refused(
    local_net: tuple[Lib, str], location: str, refused_by: str
) -> None:
    lib, base = local_net
    to = location.format(port=base.rsplit(":", 1)[1])
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("io.net.http_get", {"url": f"{base}/redirect?to={to}"})
    assert caught.value.rule == "redirect_refused"
    assert caught.value.details["refused_by"] == refused_by


def test_a_redirect_loop_is_cut_off(local_net: tuple[Lib, str]) -> None:
    lib, base = local_net
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("io.net.http_get", {"url": f"{base}/loop"})
    assert caught.value.rule == "redirect_refused"


@pytest.mark.parametrize("path", ["/big?n=200000", "/chunked?chunks=64", "/gzip-bomb"])
def test_oversized_responses_are_refused(local_net: tuple[Lib, str], path: str) -> None:
    lib, base = local_net
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("io.net.http_get", {"url": base + path})
    assert caught.value.rule == "response_too_large"


# --- processes -----------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _wait_until(predicate: object, bound_s: float = 5.0) -> bool:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def _marked_processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes() and _alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def python_lib(tmp_path: Path) -> Lib:
    return build_lib(
        tmp_path / "p",
        exec_allow_commands=[sys.executable, "yes"],
        exec_timeout_s=3,
        exec_max_memory_mb=256,
        exec_max_output_bytes=100_000,
    )


def test_a_fork_bomb_is_contained_and_leaves_no_process_behind(python_lib: Lib) -> None:
    marker = f"aifr-bomb-{os.getpid()}-{time.monotonic_ns()}"
    bomb = f"import os  # {marker}\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    started = time.monotonic()
    with pytest.raises(ExecutionTimeoutError):
        python_lib.call("sys.exec", {"argv": [sys.executable, "-c", bomb], "timeout_s": 1.5})
    assert time.monotonic() - started < 15
    assert _wait_until(lambda: not _marked_processes(marker)), _marked_processes(marker)


def test_a_memory_hog_fails_inside_its_limit(python_lib: Lib) -> None:
    out = python_lib.call(
        "sys.exec", {"argv": [sys.executable, "-c", "x = bytearray(2 * 1024 ** 3)"]}
    )
    assert out["exit_code"] != 0
    assert "MemoryError" in out["stderr"]


def test_an_output_flood_is_killed_at_the_cap(python_lib: Lib) -> None:
    with pytest.raises(SandboxRefusalError) as caught:
        python_lib.call("sys.exec", {"argv": ["yes", "flood"]})
    assert caught.value.rule == "output_too_large"


def test_a_process_that_leaves_the_session_is_still_killed(python_lib: Lib) -> None:
    escape = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    print(os.getpid(), flush=True)\n"
        "    time.sleep(60)\n"
        "else:\n"
        "    time.sleep(0.5)\n"
    )
    out = python_lib.call("sys.exec", {"argv": [sys.executable, "-c", escape]})
    escaped = int(out["stdout"].split()[0])
    assert _wait_until(lambda: not _alive(escaped))


def test_a_cpu_hog_is_stopped_by_its_cpu_limit(tmp_path: Path) -> None:
    sandbox = Sandbox(allow_commands=[sys.executable], limits=SandboxLimits(timeout_s=30, cpu_s=1))
    done = run_in(sandbox, [sys.executable, "-c", "while True: pass"], tmp_path)
    assert done.signal_name in ("SIGXCPU", "SIGKILL")
    assert done.duration_s < 10


def test_a_file_size_bomb_is_stopped_by_its_file_limit(tmp_path: Path) -> None:
    sandbox = Sandbox(allow_commands=[sys.executable], limits=SandboxLimits(file_bytes=1024 * 1024))
    done = run_in(
        sandbox,
        [sys.executable, "-c", "open('big', 'wb').write(b'x' * (8 * 1024 * 1024))"],
        tmp_path,
    )
    assert done.returncode != 0
    assert (tmp_path / "big").stat().st_size <= 1024 * 1024


def test_exec_refuses_a_working_folder_outside_the_root_or_through_a_symlink(
    world: tuple[Lib, Path],
) -> None:
    lib, outside = world
    lib = build_lib(lib.root, exec_allow_commands=["pwd"])
    (lib.root / "out").symlink_to(outside, target_is_directory=True)
    for cwd, rule in [
        ("..", "path_outside_root"),
        ("%2e%2e", "path_outside_root"),
        ("out", "symlink_refused"),
    ]:
        with pytest.raises(SandboxRefusalError) as caught:
            lib.call("sys.exec", {"argv": ["pwd"], "cwd": cwd})
        assert caught.value.rule == rule


NUMERIC_LOOPBACKS = ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.0.0.1"]


@pytest.mark.parametrize("host", NUMERIC_LOOPBACKS)
def test_loopback_spelt_in_decimal_hex_or_octal_is_refused_even_when_allowlisted(
    tmp_path: Path, host: str
) -> None:
    """An allowlist entry is a name, not a licence: the address it resolves to is judged."""
    lib = build_lib(tmp_path / "p", net_allow_hosts=[host], net_allow_schemes=["http", "https"])
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("io.net.http_get", {"url": f"http://{host}/"})
    # httpx itself refuses octal with a leading zero as not an IPv4 address
    assert caught.value.rule in ("private_address_refused", "invalid_url"), caught.value
