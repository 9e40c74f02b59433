"""Bubblewrap (``bwrap``, user namespaces): a fresh mount namespace per command.

The command sees only what is mounted: the system folders read-only, ``/dev`` and
``/proc`` of its own, an empty ``/tmp``, the read roots read-only and the write roots
writable. A hidden path inside a mounted tree is covered: a folder by an empty read-only
``tmpfs``, a file by ``/dev/null`` read-only. It runs in new PID, IPC, UTS, cgroup and
network namespaces (the network namespace holds only a loopback device, so nothing
outside is reachable), with every capability dropped and the seccomp filter loaded from
a descriptor (``--seccomp FD``) just before the command starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from aifr.invocation.sandbox_rules import SandboxRules, grants, listed_folders

__all__ = ["bwrap_path", "command_prefix", "probe"]

_PROBE_TIMEOUT_S = 10.0


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
    mounted: list[Path] = []
    for path in rules.system_read:
        if str(path) == "/proc":
            continue
        _mount_tree(args, path, writable=False)
        mounted.append(path)
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108  # private tmpfs
    found = grants(rules, roots_only=True)
    for grant in found:  # a folder holding a hidden path: read-only, its children bound
        flag = "--bind" if grant.access == "write" else "--ro-bind"
        args += [flag, str(grant.path), str(grant.path)]
        mounted.append(grant.path)
    for path in sorted(rules.hidden, key=lambda p: len(p.parts)):
        _hide(args, path, mounted)
    return args, listed_folders(found)
