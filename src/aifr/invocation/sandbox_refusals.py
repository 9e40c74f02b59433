"""What the sandbox refused a command, told from what the command printed.

The kernel does not tell the parent which paths Landlock or a missing mount refused, so
the command's standard error is read for the usual shapes of a refusal (``cat: X:
Permission denied``, ``cannot create X: Read-only file system``, ``open('X')``...). A
path counts only when the rules deny it (outside the roots and system folders, or hidden),
so an ordinary permission error on a file the rules allow is not blamed on the sandbox.
The answer is a hint for the operator widening a policy, not a complete list.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from aifr.invocation.sandbox_rules import SandboxRules

__all__ = ["refused_paths"]

_DENIAL = re.compile(
    r"permission denied|operation not permitted|read-only file system|no such file or directory"
    r"|errno 13|errno 1\b|errno 30|errno 2\b",
    re.IGNORECASE,
)
_QUOTED = re.compile(r"""['"\u2018\u201c]([^'"\u2019\u201d\n]{1,4096})['"\u2019\u201d]""")
_COLON = re.compile(r"(?<!\S)([^\s:'\"]{1,4096}):\s")
_PROGRAM = re.compile(r"^\s*[^\s:]+:\s")  # "cat: ..." names the program, not a path
_CREATE = re.compile(r"cannot (?:create|open|remove|access|stat)\s+([^\s:'\"]{1,4096})")
_LIMIT = 32


def refused_paths(stderr: bytes, cwd: str, rules: SandboxRules) -> tuple[str, ...]:
    """Paths the command's errors name that ``rules`` kept from it (at most 32)."""
    found: dict[str, None] = {}
    text = stderr[-65536:].decode("utf-8", "replace")
    for line in text.splitlines():
        if not _DENIAL.search(line):
            continue
        body = _PROGRAM.sub("", line, count=1)
        candidates = [*_QUOTED.findall(body), *_CREATE.findall(body), *_COLON.findall(body)]
        for candidate in candidates:
            path = _absolute(candidate, cwd)
            if path is None:
                continue
            if rules.is_writable(path) or (
                rules.is_readable(path) and "read-only" not in line.lower()
            ):
                continue
            found.setdefault(str(path))
            if len(found) >= _LIMIT:
                return tuple(found)
    return tuple(found)


def _absolute(candidate: str, cwd: str) -> Path | None:
    candidate = candidate.strip()
    if (
        not candidate
        or candidate.startswith("-")
        or ("/" not in candidate and "." not in candidate)
    ):
        return None
    if not candidate.startswith("/"):
        candidate = os.path.join(cwd, candidate)
    return Path(os.path.normpath(candidate))
