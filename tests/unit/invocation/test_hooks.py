"""Hooks: order global -> capability -> local, sync and async, timeout, retry, isolation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from aifr.errors import ConfigError, ErrorCode
from aifr.invocation import HookCall, HookRegistry, Hooks, HookStage, RequestContext
from aifr.invocation.execution import AsyncExecutor, BlockingExecutor, ExecutorPools, drive
from aifr.invocation.hooks import run_hooks


@pytest.fixture
def pools() -> Iterator[ExecutorPools]:
    pools = ExecutorPools(handler_workers=4, io_workers=2)
    yield pools
    pools.close()


def make_call(stage: HookStage = HookStage.BEFORE) -> HookCall:
    return HookCall(
        stage=stage,
        context=RequestContext(principal="alice"),
        spec=None,
        capability_id="demo.x",
        inputs={},
    )


def test_hooks_run_global_then_capability_then_local(pools: ExecutorPools) -> None:
    registry = HookRegistry()
    ran: list[str] = []
    registry.global_hooks.before(lambda c: ran.append("global"))
    registry.capability("demo.x").before(lambda c: ran.append("capability"))
    registry.capability("demo.other").before(lambda c: ran.append("other"))
    local = Hooks()
    local.before(lambda c: ran.append("local"))
    registry.global_hooks.after(lambda c: ran.append("after"))
    failures = drive(run_hooks(registry, make_call(), local, BlockingExecutor(pools)))
    assert failures == []
    assert ran == ["global", "capability", "local"]


def test_async_hooks_run_from_sync_and_async_drivers(pools: ExecutorPools) -> None:
    registry = HookRegistry()
    ran: list[str] = []

    async def hook(call: HookCall) -> None:
        await asyncio.sleep(0)
        ran.append(call.stage.value)

    registry.global_hooks.cleanup(hook)
    call = make_call(HookStage.CLEANUP)
    assert drive(run_hooks(registry, call, None, BlockingExecutor(pools))) == []
    assert asyncio.run(run_hooks(registry, call, None, AsyncExecutor(pools))) == []
    assert ran == ["cleanup", "cleanup"]


def test_a_failing_hook_is_recorded_and_the_next_hook_still_runs(pools: ExecutorPools) -> None:
    registry = HookRegistry()
    ran: list[str] = []

    def broken(call: HookCall) -> None:
        raise RuntimeError("hook bug")

    registry.global_hooks.before(broken, name="broken")
    registry.global_hooks.before(lambda c: ran.append("next"))
    failures = drive(run_hooks(registry, make_call(), None, BlockingExecutor(pools)))
    assert ran == ["next"]
    assert [(f.hook, f.code, f.scope, f.attempts) for f in failures] == [
        ("broken", ErrorCode.HOOK_FAILED.value, "global", 1)
    ]
    assert "hook bug" in failures[0].message


def test_a_hanging_hook_times_out_and_is_isolated(pools: ExecutorPools) -> None:
    registry = HookRegistry()
    release = threading.Event()
    registry.global_hooks.before(lambda c: release.wait(10), name="hangs", timeout_s=0.05)
    try:
        failures = drive(run_hooks(registry, make_call(), None, BlockingExecutor(pools)))
    finally:
        release.set()
    assert [(f.hook, f.code) for f in failures] == [("hangs", ErrorCode.EXECUTION_TIMEOUT.value)]


def test_a_hanging_async_hook_times_out_on_the_callers_loop(pools: ExecutorPools) -> None:
    registry = HookRegistry()

    async def hangs(call: HookCall) -> None:
        await asyncio.Event().wait()

    registry.global_hooks.after(hangs, name="hangs", timeout_s=0.05)
    failures = asyncio.run(
        run_hooks(registry, make_call(HookStage.AFTER), None, AsyncExecutor(pools))
    )
    assert [f.code for f in failures] == [ErrorCode.EXECUTION_TIMEOUT.value]


def test_a_flaky_hook_succeeds_within_its_retries(pools: ExecutorPools) -> None:
    registry = HookRegistry()
    attempts: list[int] = []

    def flaky(call: HookCall) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("try again")

    registry.global_hooks.before(flaky, retries=2)
    assert drive(run_hooks(registry, make_call(), None, BlockingExecutor(pools))) == []
    assert len(attempts) == 3


def test_a_hook_failing_every_retry_reports_all_attempts(pools: ExecutorPools) -> None:
    registry = HookRegistry()

    def always(call: HookCall) -> None:
        raise ConnectionError("down")

    registry.global_hooks.on_error(always, retries=1)
    failures = drive(run_hooks(registry, make_call(HookStage.ERROR), None, BlockingExecutor(pools)))
    assert failures[0].attempts == 2


def test_hooks_can_be_removed_and_bad_options_are_refused() -> None:
    hooks = Hooks()
    hook = hooks.before(print)
    assert hooks
    hooks.remove(hook)
    assert not hooks
    with pytest.raises(ConfigError):
        hooks.before(print, retries=-1)
    with pytest.raises(ConfigError):
        hooks.before(print, timeout_s=0)
