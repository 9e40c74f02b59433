"""Process limits for sandboxed commands: rlimits, the pids cgroup, killing what is left.

Limits are set in the child before ``exec``: CPU seconds, address space, file size, core
dumps and process count. The process count is enforced by a ``pids`` cgroup when one is
writable (it holds for root too and catches children that leave the session); otherwise
by ``RLIMIT_NPROC``, which the kernel applies to unprivileged users only. When a command
ends, every process left in its session, process group and cgroup is killed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import resource
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aifr.errors import ExecutionError

__all__ = [
    "SandboxLimits",
    "child_setup",
    "kill_all",
    "make_cgroup",
    "remove_cgroup",
    "rlimit_nproc_mode",
]

logger = logging.getLogger(__name__)

_CGROUP_BASES = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))
_KILL_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Limits applied to one command; ``cpu_s`` defaults to the timeout rounded up."""

    timeout_s: float = 30.0
    memory_bytes: int = 512 * 1024 * 1024
    file_bytes: int = 64 * 1024 * 1024
    processes: int = 64
    output_bytes: int = 1024 * 1024
    stdin_bytes: int = 1024 * 1024
    cpu_s: int | None = None

    @property
    def cpu_seconds(self) -> int:
        """CPU seconds the command may use (soft limit; SIGKILL one second later)."""
        return self.cpu_s if self.cpu_s is not None else max(1, math.ceil(self.timeout_s))


def make_cgroup(processes: int, *, required: bool | None) -> Path | None:
    """A fresh pids cgroup capped at ``processes``; ``None`` when off or none is writable.

    Raises:
        ExecutionError: ``required`` is true and no pids cgroup is writable.
    """
    if required is False:
        return None
    for base in _CGROUP_BASES:
        group = base / f"aifr-sandbox-{uuid.uuid4().hex}"
        try:
            group.mkdir()
        except OSError:
            continue
        try:
            (group / "pids.max").write_text(str(processes))
        except OSError:
            group.rmdir()
            continue
        return group
    if required:
        raise ExecutionError("no writable pids cgroup is available for the sandbox")
    return None


def remove_cgroup(group: Path | None) -> None:
    """Remove ``group``, killing members still in it (bounded wait).

    A process that just exited can stay counted for a moment (a PID namespace's init
    is released after its parent reaps it), so the wait starts at a tenth of a
    millisecond and doubles, instead of paying a fixed sleep on every command.
    """
    if group is None:
        return
    deadline = time.monotonic() + _KILL_WAIT_S
    pause = 0.0001
    while True:
        try:
            group.rmdir()
            return
        except OSError:  # still has members that are being reaped
            if time.monotonic() > deadline:
                logger.warning("sandbox cgroup %s could not be removed", group)
                return
            _kill_members(group)
            time.sleep(pause)
            pause = min(pause * 2, 0.01)


def child_setup(
    limits: SandboxLimits, cwd_fd: int, cgroup: Path | None, then: Callable[[], None] | None
) -> Callable[[], None]:
    """The function run in the child between fork and exec (async-signal-light calls only)."""
    procs_file = os.fsencode(cgroup / "cgroup.procs") if cgroup is not None else None
    cpu = limits.cpu_seconds

    def setup() -> None:
        if procs_file is not None:
            fd = os.open(procs_file, os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
        else:
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.fchdir(cwd_fd)
        os.close(cwd_fd)
        os.umask(0o022)
        if then is not None:
            then()  # the sandbox backend's own restriction, last before exec

    return setup


_CAP_SYS_ADMIN = 21
_CAP_SYS_RESOURCE = 24


def rlimit_nproc_mode() -> str:
    """``"rlimit"`` when the kernel will hold the child to ``RLIMIT_NPROC``, else ``"none"``.

    The kernel exempts root and processes with ``CAP_SYS_RESOURCE`` or ``CAP_SYS_ADMIN``.
    """
    if os.geteuid() == 0:
        return "none"
    effective = 0
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("CapEff:"):
                effective = int(line.split()[1], 16)
    exempt = (1 << _CAP_SYS_ADMIN) | (1 << _CAP_SYS_RESOURCE)
    return "none" if effective & exempt else "rlimit"


def _session_members(session_id: int) -> list[int]:
    """Processes whose session is ``session_id`` (Linux ``/proc``; empty elsewhere)."""
    members: list[int] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    stat = handle.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) > 3 and int(fields[3]) == session_id:
                members.append(int(entry.name))
    return members


def _kill_members(group: Path) -> None:
    with contextlib.suppress(OSError):
        for line in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(line), signal.SIGKILL)


def kill_all(proc: subprocess.Popen[bytes], cgroup: Path | None) -> None:
    """Kill the command and everything it started: process group, session and cgroup.

    The session is found by reading every ``/proc/PID/stat`` (about 2 ms on a busy
    machine), so it is read only without a cgroup: a cgroup holds every descendant,
    including those that left the session with ``setsid``.
    """
    pid = proc.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if cgroup is None:
        for member in _session_members(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member, signal.SIGKILL)
    else:
        _kill_members(cgroup)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=_KILL_WAIT_S)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
