"""A seccomp filter for sandboxed commands, assembled as classic BPF with ``struct``.

The filter refuses (``EPERM``) the system calls a confined command has no business
making: ``ptrace`` and cross-process memory access, mounting and namespace changes,
kernel keyrings, module loading, ``bpf``, ``perf_event_open``, ``userfaultfd`` and
``io_uring`` (whose operations would bypass the socket rule). ``clone`` with a namespace
flag is refused; ``clone3`` answers ``ENOSYS`` so the C library falls back to ``clone``,
whose flags the filter can see. Sockets: packet sockets always, Unix sockets where the
backend asks (Landlock), and IP sockets unless the call has network, in which case only
IP stream sockets (TCP) are allowed. A system
call from another architecture's table (x32, i386 through ``int 0x80``) kills the
process. Only x86-64 has a table here; elsewhere :func:`filter_program` returns ``None``.
"""

from __future__ import annotations

import errno
import functools
import platform
import struct
from dataclasses import dataclass

__all__ = ["filter_program", "is_supported"]

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_AND_K = 0x54
_RET_K = 0x06
_OFF_NR, _OFF_ARCH, _OFF_ARG0, _OFF_ARG1 = 0, 4, 16, 24

_X86_64_DENIED = {
    "ptrace": 101, "syslog": 103, "uselib": 134, "vhangup": 153, "pivot_root": 155,
    "acct": 163, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
    "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173,
    "init_module": 175, "delete_module": 176, "quotactl": 179, "lookup_dcookie": 212,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
    "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311, "finit_module": 313,
    "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425,
    "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
}  # fmt: skip
_CLONE, _CLONE3, _SOCKET = 56, 435, 41
# CLONE_NEWTIME, NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
_NAMESPACE_FLAGS = 0x80 | 0x20000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x70000000
_AF_UNIX, _AF_INET, _AF_INET6, _AF_PACKET = 1, 2, 10, 17
_SOCK_TYPE_MASK, _SOCK_STREAM = 0xF, 1


@dataclass(frozen=True, slots=True)
class _Op:
    code: int
    k: int
    jt: str | None = None  # label jumped to when true (conditional jumps)
    jf: str | None = None  # label jumped to when false; None means the next instruction
    label: str | None = None


def is_supported() -> bool:
    """Whether this machine's architecture has a system-call table here."""
    return platform.machine() in ("x86_64", "AMD64")


@functools.cache
def filter_program(*, network: bool, unix_sockets: bool = True) -> bytes | None:
    """The filter as ``struct sock_filter`` records, or ``None`` on an unsupported arch.

    Assembled once per process for each of its four forms (it depends on nothing else).

    Without ``unix_sockets`` a command cannot create a Unix socket (``socketpair``
    stays): Landlock does not govern connecting to a socket by its path, so a command
    could otherwise reach a socket inside a hidden folder (aifr's own MCP socket in
    ``.aifr/``). Bubblewrap hides those by its mounts and keeps them.
    """
    if not is_supported():
        return None
    ops = [
        _Op(_LD_W_ABS, _OFF_ARCH),
        _Op(_JEQ_K, _AUDIT_ARCH_X86_64, jt=None, jf="kill"),
        _Op(_LD_W_ABS, _OFF_NR),
        _Op(_JGE_K, _X32_BIT, jt="kill"),
        *[_Op(_JEQ_K, nr, jt="eperm") for nr in sorted(_X86_64_DENIED.values())],
        _Op(_JEQ_K, _CLONE, jt="clone"),
        _Op(_JEQ_K, _CLONE3, jt="enosys"),
        _Op(_JEQ_K, _SOCKET, jt="socket", jf="allow"),
        _Op(_LD_W_ABS, _OFF_ARG0, label="clone"),
        _Op(_JSET_K, _NAMESPACE_FLAGS, jt="eperm", jf="allow"),
        _Op(_LD_W_ABS, _OFF_ARG0, label="socket"),
        _Op(_JEQ_K, _AF_PACKET, jt="eperm"),
        _Op(_JEQ_K, _AF_UNIX, jt="allow" if unix_sockets else "eperm"),
        _Op(_JEQ_K, _AF_INET, jt="inet"),
        _Op(_JEQ_K, _AF_INET6, jt="inet", jf="allow"),
    ]
    if network:  # IP sockets: TCP only (Landlock or the network namespace bounds where)
        ops += [
            _Op(_LD_W_ABS, _OFF_ARG1, label="inet"),
            _Op(_AND_K, _SOCK_TYPE_MASK),
            _Op(_JEQ_K, _SOCK_STREAM, jt="allow", jf="eperm"),
        ]
    else:
        ops.append(_Op(_RET_K, _RET_ERRNO | errno.EPERM, label="inet"))
    ops += [
        _Op(_RET_K, _RET_ALLOW, label="allow"),
        _Op(_RET_K, _RET_KILL_PROCESS, label="kill"),
        _Op(_RET_K, _RET_ERRNO | errno.EPERM, label="eperm"),
        _Op(_RET_K, _RET_ERRNO | errno.ENOSYS, label="enosys"),
    ]
    return _assemble(ops)


def _assemble(ops: list[_Op]) -> bytes:
    labels = {op.label: index for index, op in enumerate(ops) if op.label is not None}
    out = bytearray()
    for index, op in enumerate(ops):
        jt = labels[op.jt] - index - 1 if op.jt is not None else 0
        jf = labels[op.jf] - index - 1 if op.jf is not None else 0
        if not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise ValueError(f"seccomp jump out of range at instruction {index}")
        out += struct.pack("=HBBI", op.code, jt, jf, op.k)
    return bytes(out)
