"""Feeding a running command its input and collecting its output, within its limits.

The output is read from both pipes as it comes; past the cap, or past the deadline, the
command and everything it started are killed (``process_limits.kill_all``).
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aifr.errors import ExecutionTimeoutError, SandboxRefusalError
from aifr.invocation.process_limits import kill_all

__all__ = ["RunningCommand", "pump"]

_READ_CHUNK = 65536
_POLL_S = 0.05
_DRAIN_S = 0.2


@dataclass
class RunningCommand:
    """The live state of one command: the process, its cgroup and what it wrote."""

    proc: subprocess.Popen[bytes]
    cgroup: Path | None
    deadline: float
    timeout_s: float
    output_cap: int
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)


def pump(run: RunningCommand, stdin: bytes) -> None:
    """Feed ``stdin`` and collect the output until the command ends, within its limits.

    Raises:
        SandboxRefusalError: the output passed its cap (``output_too_large``).
        ExecutionTimeoutError: the command ran past its deadline.
    """
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
                _timed_out(run)
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
                    kill_all(run.proc, run.cgroup)
                    raise SandboxRefusalError(
                        f"the command wrote more than {run.output_cap} bytes and was killed",
                        rule="output_too_large",
                        limit=run.output_cap,
                    )
    try:
        proc.wait(timeout=max(0.0, run.deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _timed_out(run)


def _timed_out(run: RunningCommand) -> None:
    kill_all(run.proc, run.cgroup)
    raise ExecutionTimeoutError(
        f"the command ran past its timeout of {run.timeout_s:g}s and was killed",
        timeout_s=run.timeout_s,
        command=run.proc.args[0] if isinstance(run.proc.args, list) else "",
        stderr_tail=bytes(run.stderr[-2000:]).decode("utf-8", "replace"),
    )


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
