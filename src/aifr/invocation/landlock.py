"""Landlock (Linux 5.13+, unprivileged) through ``ctypes`` system calls.

The ruleset is built in the parent (``landlock_create_ruleset`` and one
``landlock_add_rule`` per grant; neither restricts the caller), so the child only makes
three calls between ``fork`` and ``exec``: ``PR_SET_NO_NEW_PRIVS``,
``landlock_restrict_self`` and, when given, the seccomp filter. No Python launcher is
re-executed: that would cost a whole interpreter start-up per command.

Every filesystem right the kernel's ABI knows is handled, so what is not granted is
denied. With ABI 4+ TCP ``bind`` and ``connect`` are handled too: a command may connect
only to the egress proxy's port (Landlock rules name ports, not addresses). With ABI 6+
the command cannot signal processes outside its domain or reach their abstract Unix
sockets. UDP is outside Landlock; the seccomp filter refuses IP datagram sockets.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aifr.errors import ExecutionError
from aifr.invocation.sandbox_rules import DEV_FILES, Grant

__all__ = ["LandlockRuleset", "abi_version", "build_ruleset", "child_restrictor"]

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2

# Filesystem rights, by the ABI that introduced them.
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_REMOVE_DIR, _REMOVE_FILE, _MAKE_CHAR, _MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
_MAKE_REG, _MAKE_SOCK, _MAKE_FIFO, _MAKE_BLOCK, _MAKE_SYM = (
    1 << 8,
    1 << 9,
    1 << 10,
    1 << 11,
    1 << 12,
)
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1

_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
_READ = _EXECUTE | _READ_FILE | _READ_DIR
_WRITE = (
    _READ | _WRITE_FILE | _TRUNCATE | _REMOVE_DIR | _REMOVE_FILE | _MAKE_DIR | _MAKE_REG
    | _MAKE_SOCK | _MAKE_FIFO | _MAKE_SYM | _REFER
)  # fmt: skip


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


class _NetPortAttr(ctypes.Structure):
    _fields_ = (("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64))


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl.restype = ctypes.c_int
    return libc


def _syscall(*args: object) -> int:
    return int(_libc().syscall(*args))


def abi_version() -> int:
    """The kernel's Landlock ABI (0 when Landlock is missing or disabled)."""
    found = _syscall(
        _SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
    )
    return max(0, int(found))


def _handled_fs(abi: int) -> int:
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


@dataclass(frozen=True, slots=True)
class LandlockRuleset:
    """A built ruleset (an open descriptor) and what it enforces."""

    fd: int
    abi: int
    enforces_tcp: bool

    def close(self) -> None:
        """Close the descriptor (a child that already restricted itself keeps its domain)."""
        os.close(self.fd)


def build_ruleset(found: Sequence[Grant], *, connect_ports: Sequence[int] = ()) -> LandlockRuleset:
    """A ruleset granting ``found`` (see :func:`grants`) and TCP to ``connect_ports`` only.

    Raises:
        ExecutionError: Landlock is unavailable or refused a rule.
    """
    abi = abi_version()
    if abi < 1:
        raise ExecutionError("Landlock is not available in this kernel")
    handled = _handled_fs(abi)
    attr = _RulesetAttr(handled, _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0, 0)
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    fd = int(_syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0))
    if fd < 0:
        raise _failed("landlock_create_ruleset")
    try:
        for grant in found:
            _add_path(fd, grant, handled)
        for dev in DEV_FILES:
            if os.path.exists(dev):
                _add_path(fd, Grant(Path(dev), "write", False), handled)
        if abi >= 4:
            for port in connect_ports:
                rule = _NetPortAttr(_NET_CONNECT_TCP, port)
                if _syscall(_SYS_ADD_RULE, fd, _RULE_NET_PORT, ctypes.byref(rule), 0) != 0:
                    raise _failed("landlock_add_rule (port)")
    except BaseException:
        os.close(fd)
        raise
    return LandlockRuleset(fd=fd, abi=abi, enforces_tcp=abi >= 4)


def _add_path(ruleset_fd: int, grant: Grant, handled: int) -> None:
    rights = {"list": _READ_DIR, "read": _READ, "write": _WRITE}[grant.access]
    if grant.access != "list" and str(grant.path).startswith("/dev/"):
        rights |= _IOCTL_DEV
    if not grant.is_dir:
        rights &= _FILE_RIGHTS
    try:
        path_fd = os.open(grant.path, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return  # vanished since the walk: nothing to grant
    try:
        rule = _PathBeneathAttr(rights & handled, path_fd)
        if _syscall(_SYS_ADD_RULE, ruleset_fd, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
            raise _failed(f"landlock_add_rule ({grant.path})")
    finally:
        os.close(path_fd)


def _failed(call: str) -> ExecutionError:
    code = ctypes.get_errno()
    return ExecutionError(f"{call} failed: {os.strerror(code)}", errno=errno.errorcode.get(code))


def child_restrictor(ruleset: LandlockRuleset, bpf: bytes | None) -> Callable[[], None]:
    """The function the child calls last before ``exec``: no new privileges, then lock.

    Everything is prepared here, in the parent; the child only makes system calls.
    """
    libc = _libc()
    syscall, prctl = libc.syscall, libc.prctl  # bound now: the child only calls them
    program = ctypes.create_string_buffer(bpf or b"", len(bpf or b""))
    fprog = _SockFprog(len(bpf or b"") // 8, ctypes.cast(program, ctypes.c_void_p))
    fprog_ref = ctypes.byref(fprog)
    ruleset_fd = ruleset.fd

    def restrict() -> None:
        if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if syscall(_SYS_RESTRICT_SELF, ruleset_fd, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
        if bpf and prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, fprog_ref, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "seccomp filter refused")

    restrict.keep_alive = (program, fprog)  # type: ignore[attr-defined]  # buffers outlive the fork
    return restrict
