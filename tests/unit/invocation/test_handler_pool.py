"""The handler pool: daemon threads, and a shutdown that waits only for work still awaited."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from aifr.invocation.handler_pool import HandlerPool


def test_work_runs_and_idle_threads_are_reused() -> None:
    pool = HandlerPool(max_workers=4)
    results = [pool.submit(lambda n=n: n * 2).result(5) for n in range(20)]
    names = {pool.submit(lambda: threading.current_thread().name).result(5) for _ in range(20)}
    pool.shutdown()

    assert results == [n * 2 for n in range(20)]
    assert len(names) == 1  # one call at a time needs one thread


def test_a_handler_error_reaches_its_caller() -> None:
    pool = HandlerPool(max_workers=1)

    def fail() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        pool.submit(fail).result(5)
    pool.shutdown()


def test_shutdown_waits_for_awaited_work_but_not_for_abandoned_work() -> None:
    pool = HandlerPool(max_workers=2)
    release = threading.Event()
    abandoned = pool.submit(release.wait, 60)
    awaited = pool.submit(time.sleep, 0.3)
    time.sleep(0.05)
    pool.abandon(abandoned)

    started = time.monotonic()
    pool.shutdown(wait=True)
    waited = time.monotonic() - started

    assert awaited.done()
    assert not abandoned.done()
    assert 0.1 < waited < 5
    release.set()


def test_queued_work_is_cancelled_and_new_work_refused_after_shutdown() -> None:
    pool = HandlerPool(max_workers=1)
    release = threading.Event()
    running = pool.submit(release.wait, 60)
    time.sleep(0.05)
    queued = pool.submit(lambda: "never")
    pool.abandon(running)
    pool.shutdown(wait=True, cancel_futures=True)

    assert queued.cancelled()
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(lambda: None)
    release.set()


def test_a_stuck_handler_does_not_keep_the_interpreter_alive() -> None:
    """A ThreadPoolExecutor joins its threads at exit; these are daemons."""
    script = (
        "import time\n"
        "from aifr.invocation.handler_pool import HandlerPool\n"
        "pool = HandlerPool(max_workers=1)\n"
        "stuck = pool.submit(time.sleep, 600)\n"
        "time.sleep(0.1)\n"
        "pool.abandon(stuck)\n"
        "pool.shutdown()\n"
        "print('exited')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "exited"


def test_a_pool_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        HandlerPool(max_workers=0)


def test_shutdown_stops_waiting_at_a_deadline_the_work_was_given() -> None:
    """The one who would have abandoned it may be gone (an event loop that ended)."""
    pool = HandlerPool(max_workers=2)
    release = threading.Event()

    def hang_with_deadline() -> None:
        pool.expire_current_at(time.monotonic() + 0.3)
        release.wait(60)

    from_inside = pool.submit(hang_with_deadline)
    from_outside = pool.submit(release.wait, 60)
    pool.expire_at(from_outside, time.monotonic() + 0.3)
    time.sleep(0.05)

    started = time.monotonic()
    pool.shutdown(wait=True)
    waited = time.monotonic() - started

    assert not from_inside.done() and not from_outside.done()
    assert 0.15 < waited < 5
    release.set()


def test_shutdown_waits_for_queued_work_too_unless_it_is_cancelled() -> None:
    pool = HandlerPool(max_workers=1)
    order: list[str] = []
    first = pool.submit(lambda: (time.sleep(0.2), order.append("first")))
    queued = pool.submit(order.append, "queued")
    cancelled = pool.submit(order.append, "cancelled")
    assert cancelled.cancel()  # its caller gave up before it started

    pool.shutdown(wait=True)

    assert first.done() and queued.done()
    assert order == ["first", "queued"]
