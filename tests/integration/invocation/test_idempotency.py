"""Idempotency keys: the first successful result is returned again without executing."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from invocation_env import Env

from aifr.errors import ErrorCode
from aifr.invocation import CallOptions, Status


def test_the_same_key_returns_the_first_result_without_executing_again(env: Env) -> None:
    first = env.runtime.invoke(
        "demo.count", {"label": "a"}, "alice", CallOptions(idempotency_key="k1")
    )
    second = env.runtime.invoke(
        "demo.count", {"label": "a"}, "alice", CallOptions(idempotency_key="k1")
    )
    assert first.ok and second.ok
    assert second.output == first.output
    assert second.replayed and not first.replayed
    assert env.calls.counted == ["a"]
    kinds = [(row["kind"], row["outcome"]) for row in env.audit_rows()]
    assert kinds == [("invocation", "ok"), ("invocation.replay", "ok")]


def test_keys_are_scoped_per_principal(env: Env) -> None:
    env.runtime.invoke("demo.count", {"label": "a"}, "alice", CallOptions(idempotency_key="k"))
    env.runtime.invoke("demo.count", {"label": "a"}, "bob", CallOptions(idempotency_key="k"))
    assert env.calls.counted == ["a", "a"]


def test_reusing_a_key_for_different_inputs_is_a_conflict(env: Env) -> None:
    env.runtime.invoke("demo.count", {"label": "a"}, "alice", CallOptions(idempotency_key="k"))
    other = env.runtime.invoke(
        "demo.count", {"label": "b"}, "alice", CallOptions(idempotency_key="k")
    )
    assert other.error is not None and other.error.code is ErrorCode.IDEMPOTENCY_CONFLICT
    assert env.calls.counted == ["a"]


def test_a_failed_execution_releases_the_key_so_a_retry_runs(env: Env) -> None:
    env.calls.fail_next.append(True)
    failed = env.runtime.invoke("demo.flaky", {}, "alice", CallOptions(idempotency_key="retry"))
    assert failed.error is not None and failed.error.code is ErrorCode.EXECUTION_FAILED
    retried = env.runtime.invoke("demo.flaky", {}, "alice", CallOptions(idempotency_key="retry"))
    assert retried.ok and not retried.replayed


def test_a_denied_call_keeps_no_key(env: Env) -> None:
    denied = env.runtime.invoke("demo.forbidden", {}, "alice", CallOptions(idempotency_key="d"))
    assert denied.status is Status.DENIED
    assert denied.error is not None and denied.error.code is ErrorCode.POLICY_DENIED


def test_concurrent_calls_with_one_key_execute_once(env: Env) -> None:
    barrier = threading.Barrier(8)

    def call(_: int) -> object:
        barrier.wait(5)
        result = env.runtime.invoke(
            "demo.count", {"label": "same"}, "alice", CallOptions(idempotency_key="c")
        )
        assert result.ok, result.error
        return result.output

    with ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(call, range(8)))
    assert env.calls.counted == ["same"]
    assert all(o == outputs[0] for o in outputs)


def test_concurrent_asyncio_tasks_with_one_key_execute_once(env: Env) -> None:
    async def main() -> list[object]:
        results = await asyncio.gather(
            *(
                env.runtime.ainvoke(
                    "demo.count", {"label": "t"}, "alice", CallOptions(idempotency_key="a")
                )
                for _ in range(6)
            )
        )
        return [r.output for r in results]

    outputs = asyncio.run(main())
    assert env.calls.counted == ["t"]
    assert all(o == outputs[0] for o in outputs)
