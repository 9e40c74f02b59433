"""The one place aifr starts processes: argv only, allowlisted, limited and contained.

Every command runs without a shell, from an allowlist, in a new session with a scrubbed
environment, a confined working directory (entered by file descriptor, so a symlink
swapped in after the check cannot redirect it) and resource limits set in the child
before ``exec``: CPU seconds, address space, file size, core dumps and process count.

The process count is enforced by a ``pids`` cgroup when one is writable (it holds for
root too and catches children that leave the session); otherwise by ``RLIMIT_NPROC``,
which the kernel applies to unprivileged users only: for root (or a process holding
``CAP_SYS_RESOURCE`` or ``CAP_SYS_ADMIN``) without a cgroup there is no process limit, and
the result says so (``process_limit="none"``). When the command exits, times out
or floods its output, every process left in its session, process group and cgroup is
killed, so nothing it started outlives the call.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import resource
import selectors
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aifr.errors import ExecutionError, ExecutionTimeoutError, SandboxRefusalError

__all__ = [
    "SAFE_PATH",
    "CommandResult",
    "Sandbox",
    "SandboxLimits",
]

logger = logging.getLogger(__name__)

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Variables that make an allowlisted program load or run something else.
# Variables that make a program load or run other code, or read its configuration
# (which can name commands) from a place the caller chooses: an agent could write that
# place inside a root first. Interpreters' whole families are refused by prefix.
_ENV_REFUSED_PREFIXES = (
    "LD_", "DYLD_", "PYTHON", "PERL", "RUBY", "NODE_", "NPM_CONFIG_", "PIP_", "JAVA_",
    "_JAVA_", "JDK_JAVA_", "LUA_", "BASH_FUNC_", "GIT_CONFIG",
)  # fmt: skip
_ENV_REFUSED = frozenset(
    {
        "PATH", "IFS", "BASH_ENV", "ENV", "SHELLOPTS", "PS4", "PROMPT_COMMAND", "HOME",
        "XDG_CONFIG_HOME", "GCONV_PATH", "GLIBC_TUNABLES", "CLASSPATH",
        "OPENSSL_CONF", "OPENSSL_ENGINES", "CURL_HOME", "WGETRC", "TCLLIBPATH",
        "EDITOR", "VISUAL", "PAGER", "MANPAGER", "LESSOPEN", "LESSCLOSE", "BROWSER",
        "SSH_ASKPASS", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_EXEC_PATH", "GIT_DIR",
        "GIT_TEMPLATE_DIR", "GIT_ASKPASS", "GIT_EDITOR", "GIT_SEQUENCE_EDITOR", "GIT_PAGER",
        "GIT_EXTERNAL_DIFF", "GIT_PROXY_COMMAND",
    }
)  # fmt: skip
_CGROUP_BASES = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))
_READ_CHUNK = 65536
_KILL_WAIT_S = 5.0
_POLL_S = 0.05
_DRAIN_S = 0.2


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


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a finished command did: exit status or signal, output and how long it took."""

    argv: tuple[str, ...]
    executable: str
    returncode: int
    stdout: bytes
    stderr: bytes
    duration_s: float
    process_limit: str  # "cgroup", "rlimit", or "none" when neither can bind

    @property
    def signal_name(self) -> str | None:
        """The signal that ended the command (``SIGKILL``, ``SIGXCPU``...), if one did."""
        if self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"


@dataclass
class _Run:
    """The live state of one command: the process, its cgroup and what it wrote."""

    proc: subprocess.Popen[bytes]
    cgroup: Path | None
    deadline: float
    timeout_s: float
    output_cap: int
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)


class Sandbox:
    """Runs allowlisted commands under limits; the only user of ``subprocess`` in aifr.

    ``allow_commands`` holds bare names (looked up on :data:`SAFE_PATH`) or absolute
    paths. ``cgroups`` turns the pids cgroup off (``False``) or on when available
    (``None``, the default).
    """

    def __init__(
        self,
        *,
        allow_commands: Iterable[str],
        limits: SandboxLimits | None = None,
        base_env: Mapping[str, str] | None = None,
        cgroups: bool | None = None,
    ) -> None:
        self.allow_commands = tuple(allow_commands)
        self.limits = limits or SandboxLimits()
        self.base_env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        self.base_env.update(base_env or {})
        self._cgroups = cgroups

    def resolve(self, command: str) -> str:
        """The absolute executable for ``command``, if the allowlist permits it.

        Raises:
            SandboxRefusalError: ``command_not_allowed`` (not listed, or a relative path)
                or ``command_not_found`` (listed but not installed).
        """
        if "\0" in command or not command:
            raise _refuse("command_not_allowed", "the command name is empty or holds NUL", command)
        if "/" in command and not command.startswith("/"):
            raise _refuse("command_not_allowed", "relative command paths are not allowed", command)
        if command.startswith("/"):
            allowed = command in self.allow_commands or any(
                name == Path(command).name and shutil.which(name, path=SAFE_PATH) == command
                for name in self.allow_commands
            )
            if not allowed:
                raise _refuse("command_not_allowed", "the command is not allowlisted", command)
            return command
        if command not in self.allow_commands:
            raise _refuse("command_not_allowed", "the command is not allowlisted", command)
        found = shutil.which(command, path=SAFE_PATH)
        if found is None:
            raise _refuse("command_not_found", f"not found on {SAFE_PATH}", command)
        return found

    def environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        """The child's whole environment: the safe base plus vetted caller variables.

        Raises:
            SandboxRefusalError: ``env_not_allowed`` for a variable that could make the
                program load other code (``LD_PRELOAD``, ``PYTHONPATH``...) or a bad name.
        """
        env = dict(self.base_env)
        for name, value in extra.items():
            if (
                not _ENV_NAME.match(name)
                or name.upper() in _ENV_REFUSED
                or name.upper().startswith(_ENV_REFUSED_PREFIXES)
                or "\0" in value
            ):
                raise SandboxRefusalError(
                    f"environment variable {name!r} is not allowed for sandboxed commands",
                    rule="env_not_allowed",
                    variable=name,
                )
            env[name] = value
        return env

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd_fd: int,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> CommandResult:
        """Run ``argv`` in the directory open as ``cwd_fd`` and wait for it, within limits.

        Raises:
            SandboxRefusalError: the command or a variable is refused, stdin is too large,
                or the output passed its cap (``output_too_large``; the command is killed).
            ExecutionTimeoutError: the command ran past its timeout (it is killed).
            ExecutionError: the command could not be started.
        """
        if not argv:
            raise _refuse("command_not_allowed", "argv is empty", "")
        executable = self.resolve(argv[0])
        child_env = self.environment(env or {})
        limits = self.limits
        if stdin is not None and len(stdin) > limits.stdin_bytes:
            raise SandboxRefusalError(
                f"stdin of {len(stdin)} bytes is over the cap of {limits.stdin_bytes}",
                rule="input_too_large",
                limit=limits.stdin_bytes,
            )
        timeout = min(timeout_s, limits.timeout_s) if timeout_s is not None else limits.timeout_s
        cgroup = self._make_cgroup()
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                [executable, *argv[1:]],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_env,
                close_fds=True,
                pass_fds=(cwd_fd,),
                start_new_session=True,
                preexec_fn=_child_setup(limits, cwd_fd, cgroup),  # limits are set in the child
            )
        except (OSError, subprocess.SubprocessError) as exc:  # exec or the child setup failed
            self._remove_cgroup(cgroup)
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise ExecutionError(f"cannot start {argv[0]!r}: {why}", command=argv[0]) from exc
        run = _Run(proc, cgroup, started + timeout, timeout, limits.output_bytes)
        try:
            self._pump(run, stdin or b"")
        finally:
            _kill_all(run)
            self._remove_cgroup(cgroup)
        return CommandResult(
            argv=tuple(argv),
            executable=executable,
            returncode=proc.returncode,
            stdout=bytes(run.stdout),
            stderr=bytes(run.stderr),
            duration_s=time.monotonic() - started,
            process_limit="cgroup" if cgroup is not None else _rlimit_nproc_mode(),
        )

    def _pump(self, run: _Run, stdin: bytes) -> None:
        proc = run.proc
        assert proc.stdout is not None and proc.stderr is not None  # noqa: S101  # PIPE above
        pending = memoryview(stdin)
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, run.stdout)
            sel.register(proc.stderr, selectors.EVENT_READ, run.stderr)
            if proc.stdin is not None:
                os.set_blocking(proc.stdin.fileno(), False)
                sel.register(proc.stdin, selectors.EVENT_WRITE, None)
            drain_until: float | None = None
            while sel.get_map():
                now = time.monotonic()
                if now >= run.deadline:
                    self._timed_out(run)
                if drain_until is None and proc.poll() is not None:
                    drain_until = now + _DRAIN_S  # exited; a leftover child may hold the pipes
                if drain_until is not None and now >= drain_until:
                    break
                for key, _ in sel.select(timeout=min(run.deadline - now, _POLL_S)):
                    if key.data is None:
                        pending = _feed(sel, proc.stdin, pending)
                        continue
                    chunk = os.read(key.fd, _READ_CHUNK)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    key.data.extend(chunk)
                    if len(key.data) > run.output_cap:
                        _kill_all(run)
                        raise SandboxRefusalError(
                            f"the command wrote more than {run.output_cap} bytes and was killed",
                            rule="output_too_large",
                            limit=run.output_cap,
                        )
        try:
            proc.wait(timeout=max(0.0, run.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._timed_out(run)

    def _timed_out(self, run: _Run) -> None:
        _kill_all(run)
        raise ExecutionTimeoutError(
            f"the command ran past its timeout of {run.timeout_s:g}s and was killed",
            timeout_s=run.timeout_s,
            command=run.proc.args[0] if isinstance(run.proc.args, list) else "",
            stderr_tail=bytes(run.stderr[-2000:]).decode("utf-8", "replace"),
        )

    def _make_cgroup(self) -> Path | None:
        if self._cgroups is False:
            return None
        for base in _CGROUP_BASES:
            group = base / f"aifr-sandbox-{uuid.uuid4().hex}"
            try:
                group.mkdir()
            except OSError:
                continue
            try:
                (group / "pids.max").write_text(str(self.limits.processes))
            except OSError:
                group.rmdir()
                continue
            return group
        if self._cgroups:
            raise ExecutionError("no writable pids cgroup is available for the sandbox")
        return None

    @staticmethod
    def _remove_cgroup(group: Path | None) -> None:
        if group is None:
            return
        deadline = time.monotonic() + _KILL_WAIT_S
        while True:
            try:
                group.rmdir()
                return
            except OSError:  # still has members that are being reaped
                if time.monotonic() > deadline:
                    logger.warning("sandbox cgroup %s could not be removed", group)
                    return
                _kill_members(group)
                time.sleep(0.01)


def _refuse(rule: str, why: str, command: str) -> SandboxRefusalError:
    return SandboxRefusalError(f"command {command!r} refused: {why}", rule=rule, command=command)


def _feed(sel: selectors.BaseSelector, pipe: IO[bytes] | None, pending: memoryview) -> memoryview:
    assert pipe is not None  # noqa: S101  # registered only when stdin is a pipe
    fileno = pipe.fileno()
    try:
        written = os.write(fileno, pending[:_READ_CHUNK]) if pending else 0
    except BrokenPipeError:
        written = len(pending)
    pending = pending[written:]
    if not pending:
        sel.unregister(pipe)
        pipe.close()
    return pending


def _child_setup(limits: SandboxLimits, cwd_fd: int, cgroup: Path | None) -> Callable[[], None]:
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

    return setup


_CAP_SYS_ADMIN = 21
_CAP_SYS_RESOURCE = 24


def _rlimit_nproc_mode() -> str:
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


def _kill_all(run: _Run) -> None:
    """Kill the command and everything it started: process group, session and cgroup."""
    pid = run.proc.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for member in _session_members(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, signal.SIGKILL)
    if run.cgroup is not None:
        _kill_members(run.cgroup)
    with contextlib.suppress(subprocess.TimeoutExpired):
        run.proc.wait(timeout=_KILL_WAIT_S)
    for pipe in (run.proc.stdin, run.proc.stdout, run.proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
