"""Bubblewrap (``bwrap``, user namespaces): a fresh mount namespace per command.

The command sees only what is mounted: the system folders read-only, ``/dev`` and
``/proc`` of its own, an empty ``/tmp``, the read roots read-only and the write roots
writable. A hidden path inside a mounted tree is covered: a folder by an empty read-only
``tmpfs``, a file by ``/dev/null`` read-only. It runs in new PID, IPC, UTS, cgroup and
network namespaces (the network namespace holds only a loopback device, so nothing
outside is reachable), with every capability dropped and the seccomp filter loaded from
a descriptor (``--seccomp FD``) just before the command starts. A folder that holds a
hidden path is mounted read-only with its other entries bound over it, as Landlock's
allow-list grants it. A command given network reaches the egress proxy through a bridge
that runs in its namespace and relays to the proxy's Unix socket.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from aifr.invocation.sandbox_rules import SandboxRules, grants, listed_folders

__all__ = ["BRIDGE_DIR", "bridge_command", "bwrap_path", "command_prefix", "probe"]

_PROBE_TIMEOUT_S = 10.0
BRIDGE_DIR = "/run/aifr-egress"
# Run inside the sandbox's network namespace when the command was given network: it
# listens on 127.0.0.1:PORT there, starts the command, and relays each connection to the
# egress proxy's Unix socket (bound in read-only); it exits as the command did.
_BRIDGE = """
import os, signal, socket, sys, threading
path, port, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
server = socket.socket()
server.bind(("127.0.0.1", port))
server.listen(16)
pid = os.fork()
if pid == 0:
    server.close()
    os.execv(argv[0], argv)
def pump(a, b):
    try:
        while chunk := a.recv(65536):
            b.sendall(chunk)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def serve():
    while True:
        client, _ = server.accept()
        upstream = socket.socket(socket.AF_UNIX)
        try:
            upstream.connect(path)
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()
threading.Thread(target=serve, daemon=True).start()
_, status = os.waitpid(pid, 0)
if os.WIFSIGNALED(status):
    os._exit(128 + os.WTERMSIG(status))
os._exit(os.WEXITSTATUS(status))
"""


def bwrap_path() -> str | None:
    """Where ``bwrap`` is installed, if it is."""
    return shutil.which("bwrap", path="/usr/local/bin:/usr/bin:/bin")


def probe(executable: str) -> str | None:
    """``None`` when ``bwrap`` can build a sandbox here, else why it cannot."""
    argv = [executable, "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "/bin/true"]
    try:
        done = subprocess.run(  # fixed argv, the sandbox's own probe
            argv, capture_output=True, timeout=_PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap cannot run: {exc}"
    if done.returncode != 0:
        return "bwrap cannot create namespaces: " + done.stderr.decode("utf-8", "replace").strip()
    return None


def _mount_tree(args: list[str], path: Path, *, writable: bool) -> None:
    if os.path.islink(path):
        args += ["--symlink", os.readlink(path), str(path)]
        return
    args += ["--bind" if writable else "--ro-bind", str(path), str(path)]


def _hide(args: list[str], path: Path, mounted: list[Path]) -> None:
    if not os.path.lexists(path) or not any(path == m or m in path.parents for m in mounted):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        args += ["--tmpfs", str(path), "--remount-ro", str(path)]
    else:
        args += ["--ro-bind", "/dev/null", str(path)]


def command_prefix(executable: str, rules: SandboxRules) -> tuple[list[str], tuple[str, ...]]:
    """The ``bwrap`` arguments for ``rules`` and the folders whose entries shaped them.

    The seccomp descriptor and the command follow (``--seccomp FD -- argv``).
    """
    args = [
        executable, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc",
        "--unshare-uts", "--unshare-cgroup-try", "--cap-drop", "ALL",
        "--unshare-net",
    ]  # fmt: skip
    # The private /tmp first: a read path or root below /tmp (a checkout there, its
    # virtual environment) is bound over it below, not hidden by it.
    args += ["--tmpfs", "/tmp"]  # noqa: S108  # private tmpfs
    mounted: list[Path] = []
    for path in rules.system_read:
        if str(path) == "/proc":
            continue
        _mount_tree(args, path, writable=False)
        mounted.append(path)
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
    args += ["--proc", "/proc", "--dev", "/dev"]
    found = grants(rules, roots_only=True)
    for grant in found:  # a folder holding a hidden path: read-only, its children bound
        flag = "--bind" if grant.access == "write" else "--ro-bind"
        args += [flag, str(grant.path), str(grant.path)]
        mounted.append(grant.path)
    for path in sorted(rules.hidden, key=lambda p: len(p.parts)):
        _hide(args, path, mounted)
    return args, listed_folders(found)


def bridge_command(python: str, python_prefix: str, socket_dir: str, port: int) -> list[str]:
    """The mounts and the launcher that give a namespaced command the egress proxy.

    ``python`` (an interpreter under ``python_prefix``, mounted read-only) runs the
    bridge; ``socket_dir`` holds the proxy's socket and is mounted at :data:`BRIDGE_DIR`.
    The command's argv follows.
    """
    mounts = ["--ro-bind", python_prefix, python_prefix, "--ro-bind", socket_dir, BRIDGE_DIR]
    launcher = [python, "-I", "-S", "-c", _BRIDGE, f"{BRIDGE_DIR}/proxy.sock", str(port)]
    return [*mounts, "--", *launcher]
