"""The claim between a sync handler's thread and the loop watching its deadline."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from aifr.invocation.execution import (
    Abandoned,
    BlockingExecutor,
    DeadlineExceeded,
    ExecutorPools,
    HandlerWatch,
    WatchedExecutor,
    drive,
)


@pytest.fixture
def blocking() -> Iterator[BlockingExecutor]:
    pools = ExecutorPools(handler_workers=2, io_workers=1)
    yield BlockingExecutor(pools, "thread")
    pools.close()


def test_a_handler_that_returns_in_time_is_claimed_by_its_thread(
    blocking: BlockingExecutor,
) -> None:
    watch = HandlerWatch()
    executor = WatchedExecutor(blocking, watch)
    caller = threading.get_ident()
    ran_in: list[int] = []

    def handler() -> str:
        ran_in.append(threading.get_ident())
        return "done"

    assert drive(executor.run(handler, {}, timeout_s=5, may_inline=True)) == "done"
    assert ran_in == [caller]
    assert watch.deadline is not None
    assert not watch.claim_for_loop()  # taken: the loop can no longer end this call


def test_a_handler_that_returns_after_its_deadline_is_a_timeout(blocking: BlockingExecutor) -> None:
    executor = WatchedExecutor(blocking, HandlerWatch())
    with pytest.raises(DeadlineExceeded):
        drive(
            executor.run(lambda: threading.Event().wait(0.05), {}, timeout_s=0.01, may_inline=True)
        )


@pytest.mark.parametrize("raises", [False, True])
def test_once_the_loop_has_claimed_the_call_the_thread_drops_it(
    blocking: BlockingExecutor, raises: bool
) -> None:
    watch = HandlerWatch()
    executor = WatchedExecutor(blocking, watch)

    def handler() -> str:
        assert watch.claim_for_loop()  # the loop, at the deadline, while the handler still runs
        if raises:
            raise ConnectionError("late failure")
        return "late"

    with pytest.raises(Abandoned):
        drive(executor.run(handler, {}, timeout_s=5, may_inline=True))


def test_hooks_and_untimed_calls_are_not_watched(blocking: BlockingExecutor) -> None:
    watch = HandlerWatch()
    executor = WatchedExecutor(blocking, watch)
    assert drive(executor.run(lambda: 1, {}, timeout_s=5)) == 1  # a hook: to the pool
    assert drive(executor.run(lambda: 2, {}, timeout_s=None, may_inline=True)) == 2
    assert watch.deadline is None and watch.claim_for_loop()
