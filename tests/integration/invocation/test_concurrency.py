"""Many threads and asyncio tasks invoking one runtime at once."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from invocation_env import Env

from aifr.invocation import CallOptions, Status


def test_threads_invoking_at_once_all_succeed_with_distinct_audit_records(env: Env) -> None:
    barrier = threading.Barrier(8)

    def worker(n: int) -> list[object]:
        barrier.wait(5)
        ids = []
        for i in range(25):
            result = env.runtime.invoke("demo.count", {"label": f"{n}-{i}"}, f"user-{n}")
            assert result.status is Status.OK, result.error
            ids.append(result.audit_id)
        return ids

    with ThreadPoolExecutor(8) as pool:
        audit_ids = [i for ids in pool.map(worker, range(8)) for i in ids]
    assert len(set(audit_ids)) == 200
    assert len(env.calls.counted) == 200
    assert len(env.audit_rows()) == 200


def test_asyncio_tasks_and_threads_share_one_runtime(env: Env) -> None:
    async def tasks() -> list[Status]:
        results = await asyncio.gather(
            *(env.runtime.ainvoke("demo.aecho", {"text": str(i)}, "alice") for i in range(50)),
            *(env.runtime.ainvoke("demo.count", {"label": f"a{i}"}, "alice") for i in range(50)),
        )
        return [r.status for r in results]

    with ThreadPoolExecutor(2) as pool:
        threaded = pool.submit(
            lambda: [
                env.runtime.invoke("demo.echo@1", {"text": "t"}, "bob").status for _ in range(50)
            ]
        )
        statuses = asyncio.run(tasks())
        assert threaded.result() == [Status.OK] * 50
    assert statuses == [Status.OK] * 100
    assert len(env.audit_rows()) == 150


def test_the_event_loop_keeps_running_while_a_sync_handler_blocks(env: Env) -> None:
    async def main() -> int:
        ticks = 0
        call = asyncio.ensure_future(
            env.runtime.ainvoke("demo.slow", {}, "alice", CallOptions(timeout_s=0.2))
        )
        while not call.done():
            ticks += 1
            await asyncio.sleep(0.01)
        assert call.result().error is not None
        return ticks

    assert asyncio.run(main()) >= 5
