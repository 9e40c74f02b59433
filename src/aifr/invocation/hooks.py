"""Hooks around every invocation: before, after, error and cleanup.

Hooks come from three scopes and run in this order: global (the runtime's), capability
(registered for one capability id), local (passed to one call). ``before`` runs once
the request is validated and allowed, just before the handler; ``after`` once the output
is valid; ``error`` when the call failed or was denied; ``cleanup`` always, last.

Each hook may be sync or async, has a timeout and a number of retries. A hook that
raises or times out on every attempt is *isolated*: logged, recorded in the result's
``hook_failures`` and announced as a ``hook.failed`` lifecycle event, and the call goes
on. Hooks observe; only policy decides (principle 2).
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import JsonValue

from aifr.capabilities import CapabilitySpec
from aifr.errors import AifrError, ConfigError, ErrorCode
from aifr.invocation.context import RequestContext
from aifr.invocation.execution import DeadlineExceeded, Executor
from aifr.invocation.result import HookFailure, Result

__all__ = ["Hook", "HookCall", "HookRegistry", "HookScope", "HookStage", "Hooks", "run_hooks"]

logger = logging.getLogger(__name__)


class HookStage(StrEnum):
    """When a hook runs."""

    BEFORE = "before"
    AFTER = "after"
    ERROR = "error"
    CLEANUP = "cleanup"


class HookScope(StrEnum):
    """Where a hook was registered; also the order scopes run in."""

    GLOBAL = "global"
    CAPABILITY = "capability"
    LOCAL = "local"


@dataclass(frozen=True, slots=True)
class HookCall:
    """What a hook receives.

    ``inputs`` are the call's inputs, read-only, with ``secret://`` references unresolved;
    ``output`` is set for ``after``; ``error`` for ``error`` (and ``cleanup`` after a
    failure); ``result`` is set for ``cleanup``.
    """

    stage: HookStage
    context: RequestContext
    spec: CapabilitySpec | None
    capability_id: str
    inputs: Mapping[str, Any]
    output: JsonValue = None
    error: AifrError | None = None
    result: Result | None = None


HookFunc = Callable[[HookCall], "object | Awaitable[object]"]


@dataclass(frozen=True, slots=True)
class Hook:
    """A hook function with its stage, timeout (seconds, ``None`` for none) and retries."""

    func: HookFunc
    stage: HookStage
    name: str
    timeout_s: float | None = 5.0
    retries: int = 0
    runner: Callable[..., Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built once: the executor calls ``runner(call=...)`` and remembers its asyncness.
        object.__setattr__(self, "runner", _as_kwargs_call(self.func))


class Hooks:
    """An ordered set of hooks for one scope. Thread-safe to extend while calls run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_stage: dict[HookStage, tuple[Hook, ...]] = {}
        self._count = 0

    def add(
        self,
        func: HookFunc,
        stage: HookStage | str,
        *,
        name: str | None = None,
        timeout_s: float | None = 5.0,
        retries: int = 0,
    ) -> Hook:
        """Register ``func`` for ``stage``; returns the :class:`Hook`.

        Raises:
            ConfigError: ``retries`` is negative or ``timeout_s`` is not positive.
        """
        if retries < 0 or (timeout_s is not None and timeout_s <= 0):
            raise ConfigError(
                f"hook {name or func!r}: retries must be >= 0 and timeout_s > 0",
                retries=retries,
                timeout_s=timeout_s,
            )
        stage = HookStage(stage)
        hook = Hook(
            func=func,
            stage=stage,
            name=name or str(getattr(func, "__qualname__", repr(func))),
            timeout_s=timeout_s,
            retries=retries,
        )
        with self._lock:
            self._by_stage[stage] = (*self._by_stage.get(stage, ()), hook)
            self._count += 1
        return hook

    def before(self, func: HookFunc, **options: Any) -> Hook:
        """Register a ``before`` hook."""
        return self.add(func, HookStage.BEFORE, **options)

    def after(self, func: HookFunc, **options: Any) -> Hook:
        """Register an ``after`` hook."""
        return self.add(func, HookStage.AFTER, **options)

    def on_error(self, func: HookFunc, **options: Any) -> Hook:
        """Register an ``error`` hook."""
        return self.add(func, HookStage.ERROR, **options)

    def cleanup(self, func: HookFunc, **options: Any) -> Hook:
        """Register a ``cleanup`` hook."""
        return self.add(func, HookStage.CLEANUP, **options)

    def remove(self, hook: Hook) -> None:
        """Unregister ``hook`` (no error when absent)."""
        with self._lock:
            before = self._by_stage.get(hook.stage, ())
            self._by_stage[hook.stage] = tuple(h for h in before if h is not hook)
            self._count -= len(before) - len(self._by_stage[hook.stage])

    def for_stage(self, stage: HookStage) -> tuple[Hook, ...]:
        """The stage's hooks in registration order."""
        return self._by_stage.get(stage, ())

    def __bool__(self) -> bool:
        return self._count > 0


class HookRegistry:
    """Global hooks and per-capability hooks of one runtime."""

    def __init__(self) -> None:
        self.global_hooks = Hooks()
        self._per_capability: dict[str, Hooks] = {}
        self._lock = threading.Lock()

    def capability(self, capability_id: str) -> Hooks:
        """The hooks of one capability id (created on first use)."""
        with self._lock:
            return self._per_capability.setdefault(capability_id, Hooks())

    def is_empty_for(self, capability_id: str) -> bool:
        """Whether no global or capability hook could run for ``capability_id``."""
        if self.global_hooks:
            return False
        hooks = self._per_capability.get(capability_id)
        return hooks is None or not hooks

    def chain(
        self, stage: HookStage, capability_id: str, local: Hooks | None
    ) -> Iterator[tuple[HookScope, Hook]]:
        """The stage's hooks in run order: global, capability, local."""
        for hook in self.global_hooks.for_stage(stage):
            yield HookScope.GLOBAL, hook
        per_capability = self._per_capability.get(capability_id)
        if per_capability is not None:
            for hook in per_capability.for_stage(stage):
                yield HookScope.CAPABILITY, hook
        if local is not None:
            for hook in local.for_stage(stage):
                yield HookScope.LOCAL, hook


async def run_hooks(
    registry: HookRegistry,
    call: HookCall,
    local: Hooks | None,
    executor: Executor,
) -> list[HookFailure]:
    """Run one stage's hooks in order, isolating each; returns the failures."""
    failures: list[HookFailure] = []
    for scope, hook in registry.chain(call.stage, call.capability_id, local):
        failure = await _run_one(hook, scope, call, executor)
        if failure is not None:
            failures.append(failure)
    return failures


async def _run_one(
    hook: Hook, scope: HookScope, call: HookCall, executor: Executor
) -> HookFailure | None:
    attempts = hook.retries + 1
    code = ErrorCode.HOOK_FAILED
    message = ""
    for _ in range(attempts):
        try:
            await executor.run(hook.runner, {"call": call}, timeout_s=hook.timeout_s)
        except DeadlineExceeded as exc:
            code, message = ErrorCode.EXECUTION_TIMEOUT, str(exc)
        except Exception as exc:  # noqa: BLE001  # isolation: a failing hook never takes down the runtime
            code, message = ErrorCode.HOOK_FAILED, f"{type(exc).__name__}: {exc}"
        else:
            return None
    logger.warning(
        "%s hook %s (%s) failed after %d attempt(s): %s",
        call.stage.value,
        hook.name,
        scope.value,
        attempts,
        code.value,
        extra={"request_id": call.context.request_id},
    )
    return HookFailure(
        hook=hook.name,
        stage=call.stage.value,
        scope=scope.value,
        code=code.value,
        message=message,
        attempts=attempts,
    )


def _as_kwargs_call(func: HookFunc) -> Callable[..., Any]:
    """Adapt ``func(call)`` to the executor's keyword calling convention, keeping asyncness."""
    if inspect.iscoroutinefunction(func):

        async def run_async(call: HookCall) -> object:
            return await func(call)

        return run_async

    def run_sync(call: HookCall) -> object:
        return func(call)

    return run_sync
