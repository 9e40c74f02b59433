"""The one place aifr starts processes: argv only, allowlisted, limited and confined.

Every command runs without a shell, from an allowlist, in a new session with a scrubbed
environment, a confined working directory (entered by file descriptor, so a symlink
swapped in after the check cannot redirect it), resource limits (``process_limits``) and,
when configured, a process sandbox (``sandbox_backends``): Landlock or bubblewrap confine
what it may read and write (``sandbox_rules``), a seccomp filter what system calls it
may make, and its network is off unless the call asks for egress, which then goes only
through the :class:`~aifr.invocation.egress_proxy.EgressProxy`. This module is the one
sandbox for ``sys.exec`` and the scanners alike.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import JsonValue

from aifr.errors import ExecutionError, SandboxRefusalError
from aifr.invocation.command_io import RunningCommand, pump
from aifr.invocation.egress_proxy import EgressProxy, HostCheck
from aifr.invocation.process_limits import (
    SandboxLimits,
    child_setup,
    kill_all,
    make_cgroup,
    remove_cgroup,
    rlimit_nproc_mode,
)
from aifr.invocation.sandbox_backends import (
    BackendStatus,
    Launch,
    LaunchPlanner,
    SandboxMode,
    shared_planner,
)
from aifr.invocation.sandbox_refusals import refused_paths
from aifr.invocation.sandbox_rules import SandboxRules

__all__ = [
    "SAFE_PATH",
    "CommandResult",
    "Sandbox",
    "SandboxLimits",
    "SandboxRules",
]


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
    sandbox: str = "none"  # the backend that confined it: "landlock", "bubblewrap", "none"
    refused_paths: tuple[str, ...] = ()
    connections: tuple[dict[str, JsonValue], ...] = ()

    @property
    def refused_hosts(self) -> tuple[str, ...]:
        """Hosts the egress proxy refused, in the order first asked for."""
        refused = (str(c["host"]) for c in self.connections if not c["allowed"])
        return tuple(dict.fromkeys(refused))

    @property
    def signal_name(self) -> str | None:
        """The signal that ended the command (``SIGKILL``, ``SIGXCPU``...), if one did."""
        if self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"


class Sandbox:
    """Runs allowlisted commands under limits; the only user of ``subprocess`` in aifr.

    ``allow_commands`` holds bare names (looked up on :data:`SAFE_PATH`) or absolute
    paths. ``cgroups`` turns the pids cgroup off (``False``) or on when available
    (``None``, the default). ``mode`` picks the process sandbox (``auto``,
    ``landlock``, ``bubblewrap`` or ``none``, the default for a bare ``Sandbox``) and
    ``rules`` what a confined command may read and write; ``egress`` vets the hosts a
    command given network may reach through the proxy (without it, none).
    """

    def __init__(
        self,
        *,
        allow_commands: Iterable[str],
        limits: SandboxLimits | None = None,
        base_env: Mapping[str, str] | None = None,
        cgroups: bool | None = None,
        mode: SandboxMode = "none",
        rules: SandboxRules | None = None,
        egress: HostCheck | None = None,
    ) -> None:
        self.allow_commands = tuple(allow_commands)
        self.limits = limits or SandboxLimits()
        self.base_env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        self.base_env.update(base_env or {})
        self.mode: SandboxMode = mode
        self.rules = rules or SandboxRules((), (), ())
        self._egress = egress
        self._cgroups = cgroups
        self._planner: LaunchPlanner | None = None
        self._detect_lock = threading.Lock()

    @property
    def status(self) -> BackendStatus:
        """The backend in use, probed once per process on first use (start-up or first command)."""
        with self._detect_lock:
            if self._planner is None:
                self._planner = shared_planner(self.mode)
            return self._planner.status

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
        read_paths: Sequence[Path] | None = None,
        write_paths: Sequence[Path] | None = None,
        network: bool = False,
    ) -> CommandResult:
        """Run ``argv`` in the directory open as ``cwd_fd`` and wait for it, within limits.

        ``read_paths`` and ``write_paths`` narrow the rules for this call (absolute
        paths the caller has confined to the roots); ``network`` gives the command
        egress through the proxy to the hosts ``egress`` allows.

        Raises:
            SandboxRefusalError: the command or a variable is refused, stdin is too large,
                the output passed its cap (``output_too_large``; the command is killed),
                or the configured sandbox is missing (``sandbox_unavailable``).
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
        backend = self.status.backend
        assert self._planner is not None  # noqa: S101  # set by status
        rules = self.rules.narrowed(read_paths, write_paths)
        timeout = min(timeout_s, limits.timeout_s) if timeout_s is not None else limits.timeout_s
        with contextlib.ExitStack() as stack:
            proxy, socket_dir = None, None
            if network:
                if backend == "bubblewrap":  # the proxy is reached through a Unix socket
                    socket_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="aifr-"))
                unix_path = f"{socket_dir}/proxy.sock" if socket_dir else None
                proxy = EgressProxy(self._egress or _no_egress, unix_path=unix_path)
                stack.enter_context(proxy)
                child_env.update(proxy.environment())
            launch = self._planner.launch(
                [executable, *argv[1:]],
                rules,
                proxy_port=proxy.port if proxy else None,
                proxy_socket_dir=socket_dir,
            )
            stack.callback(launch.close)
            returncode, run, duration, cgroup = self._start(
                launch.argv, launch, child_env, cwd_fd, stdin, timeout, argv[0]
            )
            connections = tuple(c.as_json() for c in proxy.connections) if proxy else ()
        if backend == "bubblewrap" and returncode > _SIGNAL_BASE:
            with contextlib.suppress(ValueError):  # bwrap exits 128+N when N killed the command
                returncode = -signal.Signals(returncode - _SIGNAL_BASE).value
        refused: tuple[str, ...] = ()
        if backend != "none":
            refused = refused_paths(bytes(run.stderr), _fd_path(cwd_fd), rules)
        return CommandResult(
            argv=tuple(argv),
            executable=executable,
            returncode=returncode,
            stdout=bytes(run.stdout),
            stderr=bytes(run.stderr),
            duration_s=duration,
            process_limit="cgroup" if cgroup is not None else rlimit_nproc_mode(),
            sandbox=backend,
            refused_paths=refused,
            connections=connections,
        )

    def _start(
        self,
        argv: list[str],
        launch: Launch,
        env: dict[str, str],
        cwd_fd: int,
        stdin: bytes | None,
        timeout: float,
        shown: str,
    ) -> tuple[int, RunningCommand, float, Path | None]:
        limits = self.limits
        cgroup = make_cgroup(limits.processes + launch.helpers, required=self._cgroups)
        started = time.monotonic()
        try:
            proc = subprocess.Popen(  # argv only, allowlisted, never a shell
                argv,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                close_fds=True,
                pass_fds=(cwd_fd, *launch.pass_fds),
                start_new_session=True,
                # limits and the sandbox are set in the child, just before exec
                preexec_fn=child_setup(
                    replace(limits, processes=limits.processes + launch.helpers),
                    cwd_fd,
                    cgroup,
                    launch.child_hook,
                ),  # see process_limits
            )
        except (OSError, subprocess.SubprocessError) as exc:  # exec or the child setup failed
            remove_cgroup(cgroup)
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise ExecutionError(f"cannot start {shown!r}: {why}", command=shown) from exc
        run = RunningCommand(proc, cgroup, started + timeout, timeout, limits.output_bytes)
        try:
            pump(run, stdin or b"")
        finally:
            kill_all(proc, cgroup)
            remove_cgroup(cgroup)
        return proc.returncode, run, time.monotonic() - started, cgroup


_SIGNAL_BASE = 128


def _no_egress(scheme: str, host: str, port: int) -> tuple[str, ...]:  # noqa: ARG001  # HostCheck
    raise SandboxRefusalError(
        f"host {host!r} refused: no egress is configured for commands",
        rule="host_not_allowed",
        host=host,
    )


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "/"


def _refuse(rule: str, why: str, command: str) -> SandboxRefusalError:
    return SandboxRefusalError(f"command {command!r} refused: {why}", rule=rule, command=command)
