"""Idempotency keys: a repeated key returns the first successful result without running again.

Keys are scoped per principal (one principal's key never reveals another's result) and
bound to the request they were first used for (capability id, canonical inputs): reusing
a key for a different request is refused with ``input.idempotency_conflict``.

The key is claimed just before execution, after policy and approval, and completed
with the result in the same transaction as the audit record. A failed execution
releases the claim, so a retry with the same key runs again (handlers that take a
:class:`~aifr.capabilities.CallInfo` see the key and can make that retry a no-op). A
second call arriving while the first runs waits for its result, up to the
capability's timeout.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

from pydantic import JsonValue

from aifr.audit import AuditEvent, AuditRecord
from aifr.errors import ErrorCode, ExecutionError, FieldError, InputValidationError
from aifr.invocation.execution import Executor
from aifr.invocation.ports import IdempotencyRecord, IdempotencyStore
from aifr.invocation.records import Call
from aifr.invocation.result import Result

__all__ = ["IdempotencyGuard"]

_string_literal: Callable[[str], str] = json.encoder.encode_basestring  # the C accelerator
_GRACE_S = 5.0
_POLL_MIN_S = 0.005
_POLL_MAX_S = 0.2


def _request_digest(call: Call) -> str:
    """``digest({"capability_id": ..., "inputs": call.digest})``, without building the dict.

    The text is exactly that dict's canonical JSON (keys in sorted order, the inputs
    digest being hex); a unit test pins the two together.
    """
    document = f'{{"capability_id":{_string_literal(call.capability_id)},"inputs":"{call.digest}"}}'
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


class IdempotencyGuard:
    """The runtime's use of an :class:`IdempotencyStore`."""

    def __init__(self, store: IdempotencyStore) -> None:
        self.store = store

    async def replay(self, call: Call, ex: Executor, timeout_s: float) -> Result | None:
        """The stored result for the call's key, waiting for one in flight; else ``None``.

        Raises:
            InputValidationError: the key was used for a different request.
            ExecutionError: ``execution.in_progress`` when the first call is still running.
        """
        key = call.idempotency_key
        assert key is not None  # noqa: S101  # callers check
        record = await ex.blocking(self.store.get, call.principal, key)
        if record is None:
            return None
        return await self._settle(call, ex, record, timeout_s)

    async def claim(self, call: Call, ex: Executor, timeout_s: float) -> Result | None:
        """Claim the key for this execution; returns the first result if another call won."""
        key = call.idempotency_key
        assert key is not None  # noqa: S101  # callers check
        while True:
            existing = await ex.blocking(
                self.store.claim, call.principal, key, _request_digest(call), time.time()
            )
            if existing is None:
                call.claimed_key = True
                return None
            result = await self._settle(call, ex, existing, timeout_s)
            if result is not None:
                return result

    async def _settle(
        self, call: Call, ex: Executor, record: IdempotencyRecord, timeout_s: float
    ) -> Result | None:
        """The finished result of ``record``; ``None`` once a dead claim was dropped."""
        key = record.key
        if record.request_digest != _request_digest(call):
            raise InputValidationError(
                f"idempotency key {key!r} was already used for a different request "
                f"(capability or inputs differ); use a new key",
                errors=[
                    FieldError(
                        path="idempotency_key",
                        code="conflict",
                        message="key already used for a different request",
                        received=key,
                    )
                ],
                code=ErrorCode.IDEMPOTENCY_CONFLICT,
                idempotency_key=key,
            )
        deadline = time.monotonic() + timeout_s + _GRACE_S
        delay = _POLL_MIN_S
        current: IdempotencyRecord | None = record
        while current is not None and not current.is_complete:
            if time.monotonic() >= deadline:
                if time.time() - current.created_at > timeout_s + _GRACE_S:
                    await ex.blocking(self.store.release, call.principal, key)
                    return None
                raise ExecutionError(
                    f"a call with idempotency key {key!r} is still running; retry later",
                    code=ErrorCode.EXECUTION_IN_PROGRESS,
                    idempotency_key=key,
                )
            await ex.sleep(delay)
            delay = min(delay * 2, _POLL_MAX_S)
            current = await ex.blocking(self.store.get, call.principal, key)
        if current is None:  # the first call failed and released the key: run again
            return None
        assert current.result is not None  # noqa: S101  # loop ends on completion
        return Result.from_dict(current.result, replayed=True)

    def complete(self, call: Call, result: dict[str, JsonValue], event: AuditEvent) -> AuditRecord:
        """Store the successful result (``Result.to_dict()``) with its audit record."""
        key = call.idempotency_key
        assert key is not None  # noqa: S101  # only claimed calls complete
        return self.store.complete(call.principal, key, result, time.time(), event)

    def release(self, call: Call) -> None:
        """Drop this call's claim (it ended without a result worth replaying)."""
        key = call.idempotency_key
        assert key is not None  # noqa: S101  # only claimed calls release
        self.store.release(call.principal, key)
        call.claimed_key = False
