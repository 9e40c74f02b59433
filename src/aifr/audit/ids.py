"""Random ids (record, request, approval, span ids) from the OS's CSPRNG, a page at a time.

``os.urandom`` releases the GIL around its ``getrandom`` call. A workflow step draws
three ids (its request, its span and its audit record), and with runs at once on
threads every such release hands the interpreter to another runnable thread, which
the caller must then wait to get back: a thread switch per id, about a tenth of the
throughput of 8 runs at once on SQLite. So each thread draws 4 KiB at a time and
slices ids from it. The bytes are the same ``os.urandom`` bytes, only fetched in
fewer calls, so the ids are exactly as unpredictable.

A forked child must not hand out ids its parent already holds in its buffer (the
parent goes on slicing them too): ``os.register_at_fork`` gives a child fresh, empty
buffers, so it draws its own. Checked at the fork rather than asked of every id, as
``os.getpid()`` was: that is a system call (glibc no longer caches it), a third of an
id's cost.
"""

from __future__ import annotations

import os
import threading
from typing import Final

__all__ = ["random_hex"]

_PAGE: Final = 4096
"""Bytes one thread draws from the OS at a time."""


class _Buffer(threading.local):
    def __init__(self) -> None:
        self.data = b""
        self.used = 0


_buffer = _Buffer()


def _forget_in_child() -> None:
    """In a forked child: drop the buffers inherited from the parent."""
    global _buffer  # replaced whole: every thread's buffer goes at once
    _buffer = _Buffer()


os.register_at_fork(after_in_child=_forget_in_child)


def random_hex(size: int) -> str:
    """``size`` random bytes from ``os.urandom`` as ``2 * size`` hex digits."""
    buffer = _buffer
    start = buffer.used
    end = start + size
    if end > len(buffer.data):
        buffer.data = os.urandom(max(_PAGE, size))
        start, end = 0, size
    buffer.used = end
    return buffer.data[start:end].hex()
