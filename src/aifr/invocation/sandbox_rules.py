"""What a sandboxed command may read and write: roots, system folders and hidden paths.

The rules are plain data shared by every backend. Writes go only inside the write roots;
reads inside the read roots plus the system folders a program needs. Hidden paths
(aifr's reserved paths, home-directory secrets and an ``/etc`` deny list) are neither
readable nor writable even where a root or system folder holds them.

Landlock grants by allow-list only, so a tree that holds a hidden path is granted child
by child (:func:`grants`): the folder itself may only be listed, its other children are
granted whole, and the walk goes down towards each hidden path. Entries that appear later
directly in such a folder are not covered until the next command.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

__all__ = [
    "DEV_FILES",
    "ETC_DENIED",
    "HOME_SECRETS",
    "SYSTEM_READ",
    "Grant",
    "SandboxRules",
    "grants",
    "home_secrets",
    "listed_folders",
]

SYSTEM_READ = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/proc")
DEV_FILES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
ETC_DENIED = (
    "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers",
    "/etc/sudoers.d", "/etc/ssh", "/etc/ssl/private", "/etc/security/opasswd",
    "/etc/krb5.keytab", "/etc/aifr",
)  # fmt: skip
HOME_SECRETS = (
    ".ssh", ".aws", ".config/gcloud", ".netrc", ".git-credentials", ".gnupg", ".kube",
    ".docker", ".pypirc", ".npmrc", ".config/gh", ".azure",
)  # fmt: skip

Access = Literal["list", "read", "write"]


@dataclass(frozen=True, slots=True)
class Grant:
    """One allow rule: ``path`` (a file or a whole folder tree) with ``access``."""

    path: Path
    access: Access
    is_dir: bool


def home_secrets(home: Path | None) -> tuple[Path, ...]:
    """The credential files and folders under ``home`` that commands never see."""
    if home is None:
        return ()
    return tuple(home / name for name in HOME_SECRETS)


def _real(paths: Iterable[Path | str]) -> tuple[Path, ...]:
    return tuple(dict.fromkeys(Path(os.path.realpath(p)) for p in paths))


@dataclass(frozen=True, slots=True)
class SandboxRules:
    """The filesystem a command sees: what it reads, writes, and never sees."""

    read_roots: tuple[Path, ...]
    write_roots: tuple[Path, ...]
    hidden: tuple[Path, ...]
    system_read: tuple[Path, ...] = ()

    @classmethod
    def build(
        cls,
        roots: Sequence[Path],
        *,
        reserved: Sequence[Path] = (),
        home: Path | None = None,
        extra_read: Sequence[Path] = (),
    ) -> SandboxRules:
        """Rules for ``roots`` (read and write) with ``reserved`` and home secrets hidden.

        ``extra_read`` adds read-only folders (a toolchain outside ``/usr``).
        """
        hidden = _real([*reserved, *home_secrets(home), *ETC_DENIED])
        system = tuple(Path(p) for p in SYSTEM_READ if os.path.isdir(p) and not os.path.islink(p))
        system += tuple(p for p in _real(extra_read) if p not in system)
        real_roots = _real(roots)
        return cls(read_roots=real_roots, write_roots=real_roots, hidden=hidden, system_read=system)

    def narrowed(
        self, read_paths: Sequence[Path] | None, write_paths: Sequence[Path] | None
    ) -> SandboxRules:
        """These rules for one call: reads only ``read_paths``, writes only ``write_paths``.

        Without ``write_paths`` a call that names ``read_paths`` writes only there. A
        path that resolves outside the rules' own roots (a symlink inside a root) is
        dropped: narrowing never widens.
        """
        if read_paths is None and write_paths is None:
            return self
        reads = _real(read_paths) if read_paths is not None else self.read_roots
        reads = tuple(r for r in reads if any(_under(r, t) for t in self.read_roots))
        writes = _real(write_paths) if write_paths is not None else reads
        writes = tuple(w for w in writes if self.is_writable(w))
        return replace(self, read_roots=tuple(dict.fromkeys([*reads, *writes])), write_roots=writes)

    def is_hidden(self, path: Path) -> bool:
        """Whether ``path`` is a hidden path or lies below one."""
        return any(_under(path, h) for h in self.hidden)

    def is_readable(self, path: Path) -> bool:
        """Whether the rules let a command read ``path`` (an absolute, resolved path)."""
        if self.is_hidden(path):
            return False
        trees = (*self.read_roots, *self.system_read)
        return any(_under(path, t) for t in trees) or str(path) in DEV_FILES

    def is_writable(self, path: Path) -> bool:
        """Whether the rules let a command write ``path``.

        A new entry directly in a folder that holds a hidden path cannot be created
        (that folder is granted for listing only).
        """
        if self.is_hidden(path) or not any(_under(path, t) for t in self.write_roots):
            return False
        holds_hidden = any(path.parent in h.parents for h in self.hidden)
        return not (holds_hidden and not os.path.lexists(path))

    def trees(self) -> list[tuple[Path, Access]]:
        """Every granted tree with its access, outer trees first, none granted twice.

        A tree inside another with as much access is left out; a write root inside a
        read-only tree stays, after it (bubblewrap mounts in this order).
        """
        found: dict[Path, Access] = {}
        for root in self.write_roots:
            found.setdefault(root, "write")
        for root in (*self.read_roots, *self.system_read):
            found.setdefault(root, "read")
        kept = [
            (tree, access)
            for tree, access in found.items()
            if not any(
                other in tree.parents and (found[other] == "write" or access == "read")
                for other in found
            )
        ]
        return sorted(kept, key=lambda item: len(item[0].parts))


def _under(path: Path, top: Path) -> bool:
    return path == top or top in path.parents


def grants(rules: SandboxRules, *, roots_only: bool = False) -> list[Grant]:
    """The allow rules that give every tree its access except the hidden paths in it.

    ``roots_only`` leaves the system folders out (bubblewrap mounts them whole).
    """
    hidden = frozenset(str(h) for h in rules.hidden)
    found: list[Grant] = []
    trees = rules.trees()
    if roots_only:
        trees = [(t, a) for t, a in trees if t not in rules.system_read]
    for tree, access in trees:
        if rules.is_hidden(tree) or not os.path.lexists(tree):
            continue
        if str(tree) == "/proc":
            _grant_proc(found)
            continue
        _grant(str(tree), access, hidden, found)
    return found


def _grant_proc(out: list[Grant]) -> None:
    """``/proc`` without any process's own folder (``/proc/PID``, ``self``).

    An allow-list cannot follow the command's future process ids, and with ``/proc``
    granted whole a command could read other processes' ``environ`` and ``maps``
    (aifr's own included): the kernel's ptrace check does not stop it for a process
    of the same user. The system-wide files (``cpuinfo``, ``meminfo``, ``sys``...) stay.
    """
    out.append(Grant(Path("/proc"), "list", True))
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.isdigit() or entry.is_symlink():
                continue
            out.append(Grant(Path(entry.path), "read", entry.is_dir(follow_symlinks=False)))


def listed_folders(found: Sequence[Grant]) -> tuple[str, ...]:
    """The folders granted for listing only: the ones whose entries shape the grants.

    ``/proc`` is left out: its entries other than process folders do not change.
    """
    return tuple(str(g.path) for g in found if g.access == "list" and str(g.path) != "/proc")


def _grant(path: str, access: Access, hidden: frozenset[str], out: list[Grant]) -> None:
    if path in hidden or os.path.islink(path):
        return  # a link is granted through its target's own rule, never by itself
    is_dir = os.path.isdir(path)
    prefix = path.rstrip("/") + "/"
    if not is_dir or not any(h.startswith(prefix) for h in hidden):
        out.append(Grant(Path(path), access, is_dir))
        return
    out.append(Grant(Path(path), "list", True))
    children: list[str] = []
    with contextlib.suppress(OSError), os.scandir(path) as entries:
        children = sorted(entry.path for entry in entries)
    for child in children:
        _grant(child, access, hidden, out)
