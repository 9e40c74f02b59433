"""Hooks inside real invocations: order, stages per outcome, isolation, lifecycle events."""

from __future__ import annotations

import threading

from invocation_env import Env

from aifr.errors import ErrorCode
from aifr.invocation import CallOptions, HookCall, Hooks, LifecycleEvent, Status


def test_stages_run_in_order_for_a_successful_call(env: Env) -> None:
    ran: list[str] = []
    env.runtime.hooks.global_hooks.before(lambda c: ran.append("global.before"))
    env.runtime.hooks.capability("demo.echo").before(lambda c: ran.append("cap.before"))
    env.runtime.hooks.global_hooks.after(lambda c: ran.append(f"after:{c.output}"))
    env.runtime.hooks.global_hooks.on_error(lambda c: ran.append("error"))
    local = Hooks()
    local.before(lambda c: ran.append("local.before"))
    local.cleanup(lambda c: ran.append(f"cleanup:{c.result.status if c.result else None}"))
    result = env.runtime.invoke("demo.echo@1", {"text": "x"}, "alice", CallOptions(hooks=local))
    assert result.ok
    assert ran == [
        "global.before",
        "cap.before",
        "local.before",
        "after:{'text': 'x'}",
        "cleanup:ok",
    ]


def test_error_hooks_see_the_error_of_a_failed_or_denied_call(env: Env) -> None:
    seen: list[str] = []
    env.runtime.hooks.global_hooks.on_error(
        lambda c: seen.append(c.error.code.value if c.error else "?")
    )
    env.runtime.hooks.global_hooks.before(lambda c: seen.append("before"))
    env.runtime.invoke("demo.boom", {}, "alice")
    env.runtime.invoke("demo.forbidden", {}, "alice")
    assert seen == ["before", "execution.failed", "policy.denied"]


def test_failing_and_hanging_hooks_never_fail_the_call(env: Env) -> None:
    release = threading.Event()

    def broken(call: HookCall) -> None:
        raise ValueError("hook bug")

    env.runtime.hooks.global_hooks.before(broken, name="broken")
    env.runtime.hooks.global_hooks.after(lambda c: release.wait(10), name="hangs", timeout_s=0.05)
    try:
        result = env.runtime.invoke("demo.echo@1", {"text": "x"}, "alice")
        later = env.runtime.invoke("demo.echo@1", {"text": "y"}, "alice")  # first hook still hangs
    finally:
        release.set()
    assert result.status is Status.OK and later.status is Status.OK
    assert [(f.hook, f.stage, f.code) for f in result.hook_failures] == [
        ("broken", "before", ErrorCode.HOOK_FAILED.value),
        ("hangs", "after", ErrorCode.EXECUTION_TIMEOUT.value),
    ]
    row = env.audit_rows()[0]
    assert row["outcome"] == "ok"
    assert [(f["hook"], f["stage"], f["code"]) for f in row["details"]["hook_failures"]] == [
        ("broken", "before", ErrorCode.HOOK_FAILED.value),
        ("hangs", "after", ErrorCode.EXECUTION_TIMEOUT.value),
    ]


def test_lifecycle_events_trace_an_invocation(env: Env) -> None:
    events: list[LifecycleEvent] = []
    env.runtime.events.subscribe(events.append)

    def broken(call: HookCall) -> None:
        raise ValueError("x")

    env.runtime.hooks.global_hooks.cleanup(broken)
    result = env.runtime.invoke("demo.echo@1", {"text": "x"}, "alice")
    kinds = [e.kind for e in events]
    assert kinds == [
        "invocation.started",
        "policy.decided",
        "hook.failed",
        "invocation.finished",
    ]
    assert {e.request_id for e in events} == {result.request_id}
    assert events[-1].details["status"] == "ok"


def test_context_snapshot_taken_in_a_hook_restores_equal(env: Env) -> None:
    from aifr.invocation import RequestContext

    snapshots: list[dict[str, object]] = []

    def keep(call: HookCall) -> None:
        call.context.set("seen", True)
        snapshots.append(call.context.snapshot())

    env.runtime.hooks.global_hooks.after(keep)
    env.runtime.invoke("demo.echo@1", {"text": "x"}, "alice")
    restored = RequestContext.restore(snapshots[0])
    assert restored.snapshot() == snapshots[0]
    assert restored.get("seen") is True


def test_hooks_cannot_change_the_inputs(env: Env) -> None:
    def meddle(call: HookCall) -> None:
        call.inputs["text"] = "changed"  # type: ignore[index]

    env.runtime.hooks.global_hooks.before(meddle, name="meddle")
    result = env.runtime.invoke("demo.echo@1", {"text": "original"}, "alice")
    assert result.output == {"text": "original"}
    assert [(f.hook, f.code) for f in result.hook_failures] == [
        ("meddle", ErrorCode.HOOK_FAILED.value)
    ]
