"""Request and global contexts (seed 002's local and global context).

A :class:`RequestContext` lives for one invocation: its ids, principal, timestamps, the
pipeline phase it reached and an ephemeral key/value store that hooks and handlers may
use. ``snapshot()`` captures all of it as plain JSON and ``restore()`` rebuilds an equal
context, so a failed request can be inspected or replayed later.

A :class:`GlobalContext` lives as long as a runtime: the shared services it was given,
its frozen configuration and the shutdown hooks, run in reverse order of registration.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeVar, cast

from pydantic import JsonValue

from aifr.audit import random_hex
from aifr.errors import ConfigError, FieldError, InputValidationError

__all__ = [
    "FINDINGS_AUDIT_KEY",
    "SANDBOX_AUDIT_KEY",
    "UPSTREAM_AUDIT_KEY",
    "GlobalContext",
    "Phase",
    "RequestContext",
    "current_request",
    "new_id",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_now = time.time

_SNAPSHOT_VERSION = 1


def new_id() -> str:
    """A random 128-bit id as 32 hex digits (request, trace and approval ids)."""
    return random_hex(16)


class Phase(StrEnum):
    """How far an invocation got through the pipeline."""

    RECEIVED = "received"
    RESOLVED = "resolved"
    VALIDATED = "validated"
    DECIDED = "decided"
    APPROVED = "approved"
    EXECUTING = "executing"
    EXECUTED = "executed"
    AUDITED = "audited"
    DONE = "done"
    FAILED = "failed"


def _json_copy(value: JsonValue, *, path: str) -> JsonValue:
    try:
        copied: JsonValue = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InputValidationError(
            f"request context value {path!r} is not JSON-serializable: {exc}",
            errors=[
                FieldError(
                    path=path,
                    code="type",
                    message="context values must be JSON values",
                    expected="JSON value",
                    received=type(value).__name__,
                )
            ],
        ) from None
    return copied


class RequestContext:
    """State of one invocation; not shared between threads while it runs.

    ``phase_times`` records the wall-clock time (seconds since the epoch) at which each
    phase was entered, so a snapshot shows where time went and where a request stopped.
    """

    __slots__ = (
        "_state",
        "capability_ref",
        "created_at",
        "parent_request_id",
        "phase",
        "phase_times",
        "principal",
        "request_id",
        "run_id",
        "step_id",
        "trace_id",
    )

    def __init__(
        self,
        *,
        principal: str,
        capability_ref: str = "",
        request_id: str | None = None,
        trace_id: str | None = None,
        run_id: str | None = None,
        step_id: str | None = None,
        parent_request_id: str | None = None,
        created_at: float | None = None,
    ) -> None:
        self.request_id = request_id or new_id()
        self.trace_id = trace_id or self.request_id
        self.principal = principal
        self.capability_ref = capability_ref
        self.run_id = run_id
        self.step_id = step_id
        self.parent_request_id = parent_request_id
        self.created_at = _now() if created_at is None else created_at
        self.phase = Phase.RECEIVED
        self.phase_times: dict[str, float] = {Phase.RECEIVED: self.created_at}
        self._state: dict[str, JsonValue] = {}

    def enter(self, phase: Phase) -> None:
        """Move to ``phase`` and stamp the time it was entered."""
        self.phase = phase
        self.phase_times[phase] = _now()

    # -- ephemeral key/value state ---------------------------------------------------

    def get(self, key: str, default: JsonValue = None) -> JsonValue:
        """The value stored under ``key``, or ``default``."""
        return self._state.get(key, default)

    def set(self, key: str, value: JsonValue) -> None:
        """Store a JSON value under ``key`` (copied, so later mutation cannot leak in).

        Raises:
            InputValidationError: ``value`` is not a JSON value.
        """
        self._state[key] = _json_copy(value, path=key)

    def delete(self, key: str) -> None:
        """Forget ``key`` (no error when absent)."""
        self._state.pop(key, None)

    def keys(self) -> list[str]:
        """Stored keys in insertion order."""
        return list(self._state)

    def __contains__(self, key: object) -> bool:
        return key in self._state

    # -- snapshot / restore ------------------------------------------------------------

    def snapshot(self) -> dict[str, JsonValue]:
        """Everything this context holds, as a JSON object that ``restore`` accepts."""
        return {
            "version": _SNAPSHOT_VERSION,
            "request_id": self.request_id,
            "trace_id": self.trace_id,
            "principal": self.principal,
            "capability_ref": self.capability_ref,
            "run_id": self.run_id,
            "step_id": self.step_id,
            "parent_request_id": self.parent_request_id,
            "created_at": self.created_at,
            "phase": str(self.phase),
            "phase_times": {str(k): v for k, v in self.phase_times.items()},
            "state": _json_copy(cast(JsonValue, self._state), path=""),
        }

    @classmethod
    def restore(cls, snapshot: Mapping[str, Any]) -> RequestContext:
        """Rebuild the context a ``snapshot()`` was taken from.

        Raises:
            InputValidationError: the snapshot is not one this version wrote.
        """
        if snapshot.get("version") != _SNAPSHOT_VERSION:
            raise InputValidationError(
                f"unsupported request context snapshot version {snapshot.get('version')!r}",
                errors=[
                    FieldError(
                        path="version",
                        code="const",
                        message="unknown snapshot version",
                        expected=_SNAPSHOT_VERSION,
                        received=cast(JsonValue, snapshot.get("version")),
                    )
                ],
            )
        context = cls(
            principal=str(snapshot["principal"]),
            capability_ref=str(snapshot["capability_ref"]),
            request_id=str(snapshot["request_id"]),
            trace_id=str(snapshot["trace_id"]),
            run_id=snapshot["run_id"],
            step_id=snapshot["step_id"],
            parent_request_id=snapshot["parent_request_id"],
            created_at=float(snapshot["created_at"]),
        )
        context.phase = Phase(snapshot["phase"])
        context.phase_times = {str(k): float(v) for k, v in snapshot["phase_times"].items()}
        state = _json_copy(snapshot["state"], path="state")
        context._state = dict(cast(dict[str, JsonValue], state))
        return context

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestContext):
            return NotImplemented
        return self.snapshot() == other.snapshot()

    __hash__ = None  # type: ignore[assignment]  # mutable: equal by content, not hashable

    def __repr__(self) -> str:
        return (
            f"RequestContext(request_id={self.request_id!r}, principal={self.principal!r}, "
            f"capability_ref={self.capability_ref!r}, phase={self.phase.value!r})"
        )


_current: ContextVar[RequestContext | None] = ContextVar("aifr_request_context", default=None)

SANDBOX_AUDIT_KEY = "aifr.sandbox"
"""The context key under which a sandboxed command's report joins its audit record."""

UPSTREAM_AUDIT_KEY = "aifr.upstream"
"""The context key under which a gateway call names its upstream server (name, version)."""

FINDINGS_AUDIT_KEY = "aifr.findings"
"""The context key under which a findings change (an import's counts, a resource) joins its audit record."""


def current_request() -> RequestContext | None:
    """The context of the invocation running in this thread or task, if any."""
    return _current.get()


def bind_request(context: RequestContext) -> Token[RequestContext | None]:
    """Make ``context`` the current request; pass the token to :func:`unbind_request`."""
    return _current.set(context)


def unbind_request(token: Token[RequestContext | None]) -> None:
    """Restore the current request that was current before :func:`bind_request`."""
    _current.reset(token)


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


class GlobalContext:
    """Services shared by every request, frozen configuration and shutdown hooks.

    Services are registered by name (``register("mailer", smtp)``) and looked up with an
    optional type check (``service("mailer", Mailer)``). The configuration mapping is
    deep-frozen at construction: nothing a request does can change it.
    """

    def __init__(
        self,
        *,
        config: Mapping[str, Any] | None = None,
        services: Mapping[str, object] | None = None,
    ) -> None:
        self._config: Mapping[str, Any] = _freeze(dict(config or {}))
        self._services: dict[str, object] = dict(services or {})
        self._shutdown_hooks: list[tuple[str, Callable[[], object]]] = []
        self._is_shut_down = False

    @property
    def config(self) -> Mapping[str, Any]:
        """The frozen configuration (mappings are read-only, lists become tuples)."""
        return self._config

    def register(self, name: str, service: object) -> None:
        """Make ``service`` available under ``name``.

        Raises:
            ConfigError: another service is already registered under ``name``.
        """
        if name in self._services:
            raise ConfigError(f"a service named {name!r} is already registered", service=name)
        self._services[name] = service

    def service(self, name: str, kind: type[T] | None = None) -> T:
        """The service registered under ``name``, checked against ``kind`` when given.

        Raises:
            ConfigError: no such service, or it is not a ``kind``.
        """
        if name not in self._services:
            known = ", ".join(sorted(self._services)) or "none"
            raise ConfigError(f"no service named {name!r} (registered: {known})", service=name)
        found = self._services[name]
        if kind is not None and not isinstance(found, kind):
            raise ConfigError(
                f"service {name!r} is a {type(found).__name__}, not a {kind.__name__}",
                service=name,
            )
        return cast(T, found)

    def services(self) -> list[str]:
        """Registered service names, sorted."""
        return sorted(self._services)

    def on_shutdown(self, hook: Callable[[], object], *, name: str | None = None) -> None:
        """Run ``hook`` at shutdown; hooks run in reverse order of registration."""
        self._shutdown_hooks.append((name or str(getattr(hook, "__qualname__", repr(hook))), hook))

    def shutdown(self) -> list[str]:
        """Run the shutdown hooks once, newest first; returns the names of those that failed.

        A failing hook is logged and the rest still run.
        """
        if self._is_shut_down:
            return []
        self._is_shut_down = True
        failed: list[str] = []
        while self._shutdown_hooks:
            name, hook = self._shutdown_hooks.pop()
            try:
                hook()
            except Exception:  # isolation: one broken hook must not stop the others
                logger.exception("shutdown hook %s failed", name)
                failed.append(name)
        return failed

    @property
    def is_shut_down(self) -> bool:
        """Whether ``shutdown()`` has run."""
        return self._is_shut_down
