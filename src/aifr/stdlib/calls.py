"""Idempotency records for side effects aifr cannot undo: ``sys.exec`` and ``io.net.http_request``.

A record is written (exclusively) *before* the effect and completed with the result
after it. A repeat with a completed record returns that result without acting again,
even when the runtime never got to record it (the process died in between). A repeat
with a record that was started but never completed means the outcome is unknown: the
capability decides whether repeating is safe (an HTTP request carrying the same
``Idempotency-Key`` header is) or must be refused (a command is).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import JsonValue

from aifr.capabilities import CallInfo, digest
from aifr.stdlib.journal import conflict_error, read_json, write_json

__all__ = ["CallRecords", "Recorded"]


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a previous call with the same key left: its state and, once done, its result."""

    state: Literal["started", "done"]
    result: dict[str, JsonValue] | None


class CallRecords:
    """Started/done records per (capability, principal, idempotency key) under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _name(self, capability_id: str, call: CallInfo) -> str:
        scope = f"{capability_id}\0{call.principal}\0{call.idempotency_key}"
        return hashlib.sha256(scope.encode()).hexdigest() + ".json"

    def begin(
        self, capability_id: str, call: CallInfo, inputs: dict[str, JsonValue]
    ) -> Recorded | None:
        """Record the start of a call, or return what an earlier call with its key left.

        Returns ``None`` (and records nothing) when the call has no idempotency key.

        Raises:
            InputValidationError: the key was used before for different inputs.
        """
        if not call.idempotency_key:
            return None
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = self._name(capability_id, call)
        request = digest({"capability": capability_id, "inputs": inputs})
        record = {"request": request, "state": "started", "result": None}
        try:
            fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            found = read_json(self.directory / name)
            if found is None:  # forgotten between the two calls: start afresh
                return self.begin(capability_id, call, inputs)
            if found["request"] != request:
                raise conflict_error(call.idempotency_key) from None
            return Recorded(state=found["state"], result=found["result"])
        os.close(fd)
        write_json(self.directory, name, record)
        return None

    def finish(self, capability_id: str, call: CallInfo, result: dict[str, JsonValue]) -> None:
        """Complete the record of a call with its result."""
        if not call.idempotency_key:
            return
        name = self._name(capability_id, call)
        found = read_json(self.directory / name)
        if found is not None:
            write_json(self.directory, name, {**found, "state": "done", "result": result})

    def forget(self, capability_id: str, call: CallInfo) -> None:
        """Drop the record of a call that failed, so the key can be used to try again."""
        if call.idempotency_key:
            (self.directory / self._name(capability_id, call)).unlink(missing_ok=True)
