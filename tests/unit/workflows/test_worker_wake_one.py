"""A wake (one run queued, one approval decided) starts one engine's turn, not all of them."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

from aifr.workflows.worker import Worker


class _Engine:
    """Counts turns; stands in for a WorkflowEngine."""

    def __init__(self) -> None:
        self.turns = 0
        self.views: set[bool] = set()
        self.more_queued = False  # each turn drained the queue: wait for the next wake

    def recover(self, *, views: bool = True) -> list[Any]:
        self.turns += 1
        self.views.add(views)
        return []

    def stop(self) -> None:
        pass


def _idle(worker: Worker, engines: list[_Engine]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with worker._idle_lock:
            if all(worker._idle):
                return
        time.sleep(0.005)
    raise AssertionError("the engines never went idle")


def test_each_wake_starts_one_idle_engine_and_stop_ends_them_all() -> None:
    engines = [_Engine() for _ in range(4)]
    worker = Worker(cast(Any, engines[0]), helpers=[cast(Any, e) for e in engines[1:]], poll_s=60.0)
    loop = threading.Thread(target=worker.run)
    loop.start()
    try:
        _idle(worker, engines)
        assert [e.turns for e in engines] == [1, 1, 1, 1]  # the first turn of each
        worker.wake()
        _idle(worker, engines)
        assert sum(e.turns for e in engines) == 5  # one engine turned, not four
        for _ in range(3):
            worker.wake()
        _idle(worker, engines)
        assert sorted(e.turns for e in engines) == [2, 2, 2, 2]  # each wake a different one
    finally:
        worker.stop()
        loop.join(10)
    assert not loop.is_alive()
    assert all(e.views == {False} for e in engines)  # the loop reads no driven run back
