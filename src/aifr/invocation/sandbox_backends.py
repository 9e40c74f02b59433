"""Choosing the sandbox backend and preparing one command's launch under it.

``auto`` takes Landlock when the kernel has it (cheapest: no extra process), else
bubblewrap when it can create namespaces here, else ``none`` with a warning. A backend
named in the configuration that is missing leaves the sandbox refusing every command
(``sandbox_unavailable``) rather than running it unconfined.

What is probed (the Landlock ABI, whether ``bwrap`` can build namespaces) is probed once
per process, and one :class:`LaunchPlanner` per mode (:func:`shared_planner`) serves every
sandbox of the process (``sys.exec``, the scanners, the ingestion child), so a sandbox
built per call pays neither the probe nor a new ruleset.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, cast

from pydantic import JsonValue

from aifr.errors import SandboxRefusalError
from aifr.invocation import bubblewrap, landlock, seccomp
from aifr.invocation.sandbox_rules import SandboxRules, grants, listed_folders

__all__ = [
    "BACKENDS",
    "BackendStatus",
    "Launch",
    "LaunchPlanner",
    "SandboxMode",
    "detect",
    "shared_planner",
]

logger = logging.getLogger(__name__)

SandboxMode = Literal["auto", "landlock", "bubblewrap", "none"]
BACKENDS = ("landlock", "bubblewrap")
_CACHE_SIZE = 16
_LANDLOCK_NET_ABI = 4


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """What the sandbox found at start-up and which backend it uses."""

    mode: str
    backend: str  # "landlock", "bubblewrap" or "none"
    unavailable: dict[str, str]  # backend -> why it cannot be used here
    landlock_abi: int
    seccomp: bool
    bwrap: str | None
    refusal: str | None = None  # set when the configured backend is missing

    @property
    def warning(self) -> str | None:
        """A line for the operator when commands would run unconfined or not at all."""
        if self.refusal is not None:
            return self.refusal
        if self.backend == "none":
            return "commands run without a filesystem or network sandbox (backend: none)"
        return None

    def as_json(self) -> dict[str, JsonValue]:
        """The status as JSON (``aifr sandbox status --json`` and ``sys.exec`` results)."""
        return {
            "mode": self.mode,
            "backend": self.backend,
            "landlock_abi": self.landlock_abi,
            "seccomp": self.seccomp and self.backend != "none",
            "bwrap": self.bwrap,
            "unavailable": dict(self.unavailable),
            "warning": self.warning,
            "commands_refused": self.refusal is not None,
        }


def detect(mode: SandboxMode, *, probe_all: bool = False) -> BackendStatus:
    """Probe the backends and pick one for ``mode``.

    ``bwrap`` is run once when the choice depends on it, or when every backend is to
    be reported (``probe_all``, as ``aifr sandbox status`` does).
    """
    unavailable: dict[str, str] = {}
    abi = _landlock_abi()
    if abi < 1:
        unavailable["landlock"] = (
            "the kernel has no Landlock (Linux 5.13+, enabled in the LSM list)"
        )
    bwrap = bubblewrap.bwrap_path()
    needed = mode == "bubblewrap" or (mode == "auto" and abi < 1)
    if needed or probe_all:
        if bwrap is None:
            unavailable["bubblewrap"] = "bwrap is not installed (apt-get install bubblewrap)"
        else:
            why = _bwrap_probe(bwrap)
            if why is not None:
                unavailable["bubblewrap"] = why
    has_seccomp = seccomp.is_supported()
    if mode == "none":
        chosen = "none"
    elif mode == "auto":
        chosen = next((b for b in BACKENDS if b not in unavailable), "none")
        if chosen == "bubblewrap" and bwrap is None:
            chosen = "none"
    else:
        chosen = mode
    refusal = None
    if mode in BACKENDS and mode in unavailable:
        refusal = f"sandbox {mode!r} is configured but unavailable: {unavailable[mode]}"
    return BackendStatus(mode, chosen, unavailable, abi, has_seccomp, bwrap, refusal)


_landlock_abi = functools.cache(landlock.abi_version)
_bwrap_probe = functools.cache(bubblewrap.probe)  # runs bwrap once per process
_planners: dict[str, LaunchPlanner] = {}
_planners_lock = threading.Lock()


def shared_planner(mode: SandboxMode) -> LaunchPlanner:
    """This process's planner for ``mode``: detected once, its rulesets shared by all."""
    with _planners_lock:
        planner = _planners.get(mode)
        if planner is None:
            planner = _planners[mode] = LaunchPlanner(detect(mode))
            if planner.status.warning is not None:
                logger.warning("sandbox: %s", planner.status.warning)
        return planner


@dataclass
class Launch:
    """How to start one command: argv, descriptors to pass, the child hook, cleanups.

    ``helpers`` counts the sandbox's own processes around the command (``bwrap``, its
    PID namespace's init, the egress bridge): the process limit is raised by as many.
    """

    argv: list[str]
    pass_fds: tuple[int, ...] = ()
    child_hook: Callable[[], None] | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    helpers: int = 0

    def close(self) -> None:
        """Release what the launch held open in the parent."""
        for cleanup in self.cleanups:
            with contextlib.suppress(OSError):
                cleanup()


@dataclass
class _Cached:
    value: object
    folders: tuple[tuple[str, int, int], ...]
    close: Callable[[], None] | None = None
    users: int = 0
    evicted: bool = False


class LaunchPlanner:
    """Prepares launches for one backend; keeps recent rulesets and mount plans for reuse.

    A Landlock ruleset or a bubblewrap argument list is reused while the folders granted
    for listing only (those holding a hidden path) keep their inode and modification
    time, i.e. no entry was added to or removed from them since it was built.
    """

    def __init__(self, status: BackendStatus) -> None:
        self.status = status
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[object, ...], _Cached] = OrderedDict()

    def launch(
        self,
        argv: list[str],
        rules: SandboxRules,
        *,
        proxy_port: int | None,
        proxy_socket_dir: str | None = None,
    ) -> Launch:
        """The launch of ``argv`` under ``rules``; network only through the proxy.

        Landlock lets the command connect to ``proxy_port`` only; bubblewrap keeps it in
        an empty network namespace where a bridge on ``proxy_port`` relays to the proxy's
        socket in ``proxy_socket_dir``.

        Raises:
            SandboxRefusalError: ``sandbox_unavailable`` (the configured backend is
                missing) or ``network_unavailable`` (network asked of a Landlock without
                TCP rules).
        """
        status = self.status
        if status.refusal is not None:
            raise SandboxRefusalError(status.refusal, rule="sandbox_unavailable", mode=status.mode)
        bpf = seccomp.filter_program(
            network=proxy_port is not None, unix_sockets=status.backend != "landlock"
        )
        if status.backend == "landlock":
            if proxy_port is not None and status.landlock_abi < _LANDLOCK_NET_ABI:
                raise SandboxRefusalError(
                    f"Landlock ABI {status.landlock_abi} cannot limit TCP connections to the "
                    "egress proxy (ABI 4, Linux 6.7, can); the command would reach any host",
                    rule="network_unavailable",
                )
            ports = (proxy_port,) if proxy_port is not None else ()
            cached = self._cached(("landlock", rules, ports), lambda: _ruleset(rules, ports))
            assert isinstance(cached.value, landlock.LandlockRuleset)  # noqa: S101  # built so
            hook = landlock.child_restrictor(cached.value, bpf)
            return Launch(list(argv), (), hook, [lambda: self._release(cached)])
        if status.backend == "bubblewrap":
            bwrap = status.bwrap
            assert bwrap is not None  # noqa: S101  # detect() chose it with a path
            cached = self._cached(("bwrap", rules), lambda: _mounts(bwrap, rules))
            prefix = cast(list[str], cached.value)
            launch = Launch([], (), None, [lambda: self._release(cached)], helpers=2)
            tail = ["--"]
            if bpf is not None:
                seccomp_fd = os.memfd_create("aifr-seccomp", 0)
                launch.cleanups.append(lambda: os.close(seccomp_fd))
                os.write(seccomp_fd, bpf)
                os.lseek(seccomp_fd, 0, os.SEEK_SET)
                launch.pass_fds = (seccomp_fd,)
                tail = ["--seccomp", str(seccomp_fd), "--"]
            if proxy_port is not None and proxy_socket_dir is not None:
                python = os.path.realpath(sys.executable)
                bridge = bubblewrap.bridge_command(
                    python, sys.base_prefix, proxy_socket_dir, proxy_port
                )
                tail = [*tail[:-1], *bridge]
                launch.helpers += 1
            launch.argv = [*prefix, *tail, *argv]
            return launch
        return Launch(list(argv))

    def _cached(self, key: tuple[object, ...], build: Callable[[], _Cached]) -> _Cached:
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and _stamps(f for f, _, _ in cached.folders) == cached.folders:
                self._cache.move_to_end(key)
                cached.users += 1
                return cached
            if cached is not None:
                self._evict(key)
        fresh = build()
        fresh.users = 1
        with self._lock:
            if key in self._cache:
                self._evict(key)
            self._cache[key] = fresh
            while len(self._cache) > _CACHE_SIZE:
                self._evict(next(iter(self._cache)))
        return fresh

    def _evict(self, key: tuple[object, ...]) -> None:
        cached = self._cache.pop(key)
        cached.evicted = True
        if cached.users == 0 and cached.close is not None:
            cached.close()

    def _release(self, cached: _Cached) -> None:
        with self._lock:
            cached.users -= 1
            if cached.evicted and cached.users == 0 and cached.close is not None:
                cached.close()


def _ruleset(rules: SandboxRules, ports: tuple[int, ...]) -> _Cached:
    found = grants(rules)
    ruleset = landlock.build_ruleset(found, connect_ports=ports)
    return _Cached(ruleset, _stamps(listed_folders(found)), ruleset.close)


def _mounts(bwrap: str, rules: SandboxRules) -> _Cached:
    prefix, folders = bubblewrap.command_prefix(bwrap, rules)
    return _Cached(prefix, _stamps(folders))


def _stamps(folders: Iterable[str]) -> tuple[tuple[str, int, int], ...]:
    found: list[tuple[str, int, int]] = []
    for folder in folders:
        try:
            info = os.stat(folder)
        except OSError:
            found.append((folder, -1, -1))
            continue
        found.append((folder, info.st_ino, info.st_mtime_ns))
    return tuple(found)
