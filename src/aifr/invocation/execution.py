"""Running handlers, hooks and blocking storage calls under timeouts, sync or async.

The pipeline is one coroutine (``Runtime._pipeline``). It never awaits anything but
an :class:`Executor` method, so ``invoke`` drives it with a plain ``send(None)`` through
a :class:`BlockingExecutor` (whose methods block and never suspend) while ``ainvoke``
awaits it on the caller's loop with an :class:`AsyncExecutor`. One core, two drivers.

Where each piece runs:

- ``sync_execution = "auto"`` (the default) picks, per call, ``"thread"`` when the call
  asks for a hard timeout (its capability declares ``timeout_s``, or the call passes
  one) and ``"inline"`` otherwise: a handler that may hang says so by declaring its
  timeout, and every other call saves the thread hand-off;
- sync handler, ``invoke``: in the runtime's handler pool (a hard timeout: the caller
  stops waiting; Python cannot kill the thread, which is abandoned), or inline in the
  calling thread when the runtime's ``sync_execution`` is ``"inline"`` (cheaper by one
  thread hand-off; the timeout is then checked when the handler returns);
- sync handler, ``ainvoke``: the whole pipeline (policy, handler, audit append) runs
  in one handler-pool thread under the blocking driver, so the loop never blocks and a
  call costs one thread hand-off. Under ``"thread"`` the loop keeps a
  :class:`HandlerWatch` on that thread: if the handler is still running at its
  deadline, the loop ends the call itself (a timeout, audited) and the thread drops it
  when the handler finally returns. Under ``"inline"`` there is no watch (the timeout
  is checked when the handler returns). Under ``"loop"`` the call runs on the caller's
  loop itself, no hand-off at all, and the loop waits for the whole call, audit commit
  included (for one-client servers such as MCP over stdio with fast, trusted handlers);
- async handler, ``ainvoke``: on the caller's loop under ``asyncio.timeout``;
- async handler, ``invoke``: on the runtime's background loop thread;
- storage calls (ledger, approvals, idempotency), ``ainvoke``: in a separate I/O pool,
  so handlers that hang can never starve audit writes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, Protocol, TypeVar, cast

from aifr.invocation.handler_pool import HandlerPool

__all__ = [
    "Abandoned",
    "AsyncExecutor",
    "BlockingExecutor",
    "DeadlineExceeded",
    "Executor",
    "ExecutorPools",
    "HandlerWatch",
    "SyncExecution",
    "WatchedExecutor",
    "drive",
]

T = TypeVar("T")
_LOOP_GRACE_S = 1.0
SyncExecution = Literal["auto", "thread", "inline", "loop"]
"""Where sync handlers run: the handler pool, the calling thread, or (``ainvoke``) the loop.

``auto`` (the default) is ``thread`` for a call that asks for a hard timeout (its
capability declares ``timeout_s``, or the call passes one) and ``inline`` otherwise.
"""


class DeadlineExceeded(Exception):  # noqa: N818  # internal signal, never leaves the runtime
    """A handler or hook ran past its timeout; translated by the caller into an AifrError."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"timed out after {timeout_s:g}s")
        self.timeout_s = timeout_s


class Abandoned(BaseException):  # internal signal, never leaves the runtime
    """The loop ended this call at its handler's deadline; the handler's thread drops it.

    A ``BaseException``, so that no ``except Exception`` on the way out of the pipeline
    turns it into a failure the thread would then audit a second time.
    """


class HandlerWatch:
    """Decides who ends a call whose sync handler runs in a pool thread, exactly once.

    The thread claims the call when the handler returns; the loop claims it when the
    handler's deadline has passed and it is still running. Whoever claims first ends the
    call (audits it); the other lets go. ``deadline`` is ``None`` until the handler
    starts, so time spent before it (policy, approval, idempotency) is not counted.
    """

    __slots__ = ("_claim", "deadline", "ended_by_loop")

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.ended_by_loop = False
        self._claim = threading.Lock()

    def start(self, timeout_s: float) -> float:
        """Mark the handler as started now; returns its deadline (``time.monotonic``)."""
        deadline = self.deadline = time.monotonic() + timeout_s
        return deadline

    def claim(self) -> bool:
        """Take the call for the handler's thread; ``False`` if the loop already has."""
        return self._claim.acquire(blocking=False)

    def claim_for_loop(self) -> bool:
        """Take the call for the loop; ``False`` if the handler's thread already has."""
        taken = self.ended_by_loop = self._claim.acquire(blocking=False)
        return taken


class _LoopThread:
    """A private event loop on a daemon thread, for async work started from sync code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name="aifr-runtime-loop", daemon=True)
                self._thread.start()
                ready.wait(10)
                self._loop = loop
            return self._loop

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


class _Asyncness:
    """Remembers whether each callable is a coroutine function (``inspect`` is slow)."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[Callable[..., Any], bool] = {}

    def is_async(self, fn: Callable[..., Any]) -> bool:
        known = self._known.get(fn)
        if known is None:
            known = self._known[fn] = inspect.iscoroutinefunction(fn)
        return known


class ExecutorPools:
    """The thread pools and background loop one runtime owns; closed with the runtime."""

    def __init__(self, *, handler_workers: int = 32, io_workers: int = 16) -> None:
        self.handlers = HandlerPool(max_workers=handler_workers, thread_name_prefix="aifr-handler")
        self.io = concurrent.futures.ThreadPoolExecutor(
            max_workers=io_workers, thread_name_prefix="aifr-io"
        )
        self.background = _LoopThread()

    def close(self) -> None:
        """Stop accepting work; wait for calls still inside their deadlines.

        Handlers abandoned at their deadlines are not waited for (see
        :mod:`aifr.invocation.handler_pool`).
        """
        self.handlers.shutdown(wait=True, cancel_futures=True)
        self.io.shutdown(wait=True)
        self.background.close()


async def _bounded(awaitable: Awaitable[T], timeout_s: float) -> T:
    try:
        async with asyncio.timeout(timeout_s) as scope:
            return await awaitable
    except TimeoutError:
        if scope.expired():
            raise DeadlineExceeded(timeout_s) from None
        raise


class Executor(Protocol):
    """How the pipeline runs code: the two drivers share this interface."""

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking storage call."""
        ...

    async def run(
        self,
        fn: Callable[..., Any],
        kwargs: dict[str, Any],
        *,
        timeout_s: float | None,
        may_inline: bool = False,
    ) -> Any:
        """Run a handler or hook (sync or async) with ``kwargs`` under ``timeout_s``.

        Raises:
            DeadlineExceeded: it ran past ``timeout_s``.
        """
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait, blocking the thread (sync driver) or yielding to the loop (async driver)."""
        ...


class BlockingExecutor:
    """Driver for ``invoke``: every method completes before returning, never suspends."""

    def __init__(self, pools: ExecutorPools, sync_execution: SyncExecution = "thread") -> None:
        self._pools = pools
        self._inline = sync_execution != "thread"
        self._asyncness = _Asyncness()

    def is_sync(self, handler: Callable[..., Any] | None) -> bool:
        """Whether ``handler`` is a plain (not ``async def``) function."""
        return handler is not None and not self._asyncness.is_async(handler)

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn`` in this thread."""
        return fn(*args)

    async def sleep(self, seconds: float) -> None:
        """Block this thread for ``seconds``."""
        time.sleep(seconds)

    async def run(
        self,
        fn: Callable[..., Any],
        kwargs: dict[str, Any],
        *,
        timeout_s: float | None,
        may_inline: bool = False,
    ) -> Any:
        """Run ``fn`` to completion or until ``timeout_s``, blocking this thread.

        ``may_inline`` lets a sync handler run in this thread when the runtime's
        ``sync_execution`` is ``"inline"``; hooks never pass it, so a hanging hook is
        always cut off at its timeout.
        """
        if self._asyncness.is_async(fn):
            return self._run_on_background_loop(fn(**kwargs), timeout_s)
        if timeout_s is None:
            return fn(**kwargs)
        if may_inline and self._inline:
            started = time.perf_counter()
            value = fn(**kwargs)
            if time.perf_counter() - started > timeout_s:
                raise DeadlineExceeded(timeout_s)
            return value
        call: Callable[[], Any] = functools.partial(contextvars.copy_context().run, fn, **kwargs)
        future = self._pools.handlers.submit(call)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            if future.done():  # the handler itself raised TimeoutError
                raise
            if not future.cancel():
                self._pools.handlers.abandon(future)
            raise DeadlineExceeded(timeout_s) from None

    def _run_on_background_loop(
        self, coroutine: Coroutine[Any, Any, Any], timeout_s: float | None
    ) -> Any:
        """Run ``coroutine`` on the runtime's loop thread, in this thread's context."""
        loop = self._pools.background.loop()
        context = contextvars.copy_context()
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def start() -> None:
            task = loop.create_task(_with_timeout(coroutine, timeout_s), context=context)
            task.add_done_callback(lambda t: _settle(t, done))

        loop.call_soon_threadsafe(start)
        # The loop enforces the timeout; this bound only guards against a handler that
        # blocks the loop thread itself (a sync sleep inside ``async def``).
        try:
            return done.result(None if timeout_s is None else timeout_s + _LOOP_GRACE_S)
        except TimeoutError:
            if done.done():
                raise
            raise DeadlineExceeded(timeout_s or 0.0) from None


class WatchedExecutor(BlockingExecutor):
    """The blocking driver for one ``ainvoke`` call run in a pool thread under a watch.

    The sync handler runs in this thread; everything else is as in
    :class:`BlockingExecutor` (hooks still go to the pool under a hard timeout).
    """

    def __init__(self, blocking: BlockingExecutor, watch: HandlerWatch) -> None:
        self._pools = blocking._pools
        self._inline = False
        self._asyncness = blocking._asyncness
        self.watch = watch

    async def run(
        self,
        fn: Callable[..., Any],
        kwargs: dict[str, Any],
        *,
        timeout_s: float | None,
        may_inline: bool = False,
    ) -> Any:
        """Run the handler here, then claim the call from the watching loop.

        Raises:
            DeadlineExceeded: the handler returned, but after its deadline.
            Abandoned: the loop already ended the call as timed out.
        """
        if not may_inline or timeout_s is None or not self.is_sync(fn):
            return await super().run(fn, kwargs, timeout_s=timeout_s)
        deadline = self.watch.start(timeout_s)
        self._pools.handlers.expire_current_at(deadline)  # if the watching loop is gone
        try:
            value = fn(**kwargs)
        except BaseException:
            self._claim(deadline, timeout_s)
            raise
        self._claim(deadline, timeout_s)
        return value

    def _claim(self, deadline: float, timeout_s: float) -> None:
        if not self.watch.claim():
            raise Abandoned
        if time.monotonic() > deadline:
            raise DeadlineExceeded(timeout_s)


def _settle(task: asyncio.Task[Any], done: concurrent.futures.Future[Any]) -> None:
    if task.cancelled():
        done.cancel()
    elif (error := task.exception()) is not None:
        done.set_exception(error)
    else:
        done.set_result(task.result())


async def _with_timeout(awaitable: Awaitable[T], timeout_s: float | None) -> T:
    if timeout_s is None:
        return await awaitable
    return await _bounded(awaitable, timeout_s)


class AsyncExecutor:
    """Driver for ``ainvoke``: blocking work goes to pools, async work runs on this loop."""

    def __init__(self, pools: ExecutorPools) -> None:
        self._pools = pools
        self._asyncness = _Asyncness()
        self._watching: set[asyncio.Task[Any]] = set()

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in the I/O pool and await it."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._pools.io, functools.partial(context.run, fn, *args))

    async def in_handler_thread(
        self, coroutine: Coroutine[Any, Any, T], *, timeout_s: float | None = None
    ) -> T:
        """Drive a never-suspending ``coroutine`` (see :func:`drive`) in the handler pool.

        The work runs to its end even if the awaiting task is cancelled, so a call that
        started is always audited. Nothing cuts it off at ``timeout_s`` (the handler's
        timeout is checked when it returns), but shutdown stops waiting for it then.
        """
        context = contextvars.copy_context()
        work = self._pools.handlers.submit(functools.partial(context.run, drive, coroutine))
        if timeout_s is not None:
            self._pools.handlers.expire_at(work, time.monotonic() + timeout_s)
        return await asyncio.shield(asyncio.wrap_future(work))

    async def in_watched_thread(
        self,
        coroutine: Coroutine[Any, Any, T],
        watch: HandlerWatch,
        first_wait_s: float,
        at_deadline: Callable[[], Awaitable[T]],
    ) -> T:
        """Drive ``coroutine`` in the handler pool, ending it at its handler's deadline.

        The loop sleeps until the earliest moment the deadline can have passed
        (``first_wait_s``: the handler's timeout, as it has not started yet), then until
        the deadline itself. If the handler is still running then and the loop claims
        the call, ``at_deadline()`` ends it (on this loop) and the thread's late result
        is dropped. A cancelled caller does not end the watch: it goes on in a task, so
        a handler that hangs is still audited at its deadline.
        """
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        handlers = self._pools.handlers
        work = handlers.submit(functools.partial(context.run, drive, coroutine))
        future = asyncio.wrap_future(work)

        def abandon() -> None:
            handlers.abandon(work)

        try:
            return await _watch(future, watch, first_wait_s, at_deadline, abandon)
        except asyncio.CancelledError:
            if not watch.ended_by_loop:  # else the deadline's audit goes on, shielded
                task = loop.create_task(_watch(future, watch, first_wait_s, at_deadline, abandon))
                self._watching.add(task)
                task.add_done_callback(self._watching.discard)
            raise

    async def sleep(self, seconds: float) -> None:
        """Yield to the loop for ``seconds``."""
        await asyncio.sleep(seconds)

    async def run(
        self,
        fn: Callable[..., Any],
        kwargs: dict[str, Any],
        *,
        timeout_s: float | None,
        may_inline: bool = False,  # noqa: ARG002  # the loop never runs sync code inline
    ) -> Any:
        """Await ``fn`` (async) or its run in the handler pool (sync) under ``timeout_s``."""
        if self._asyncness.is_async(fn):
            return await _with_timeout(fn(**kwargs), timeout_s)
        context = contextvars.copy_context()
        work = self._pools.handlers.submit(context.run, functools.partial(fn, **kwargs))
        if timeout_s is not None:  # the loop's timeout may never fire if the loop ends
            self._pools.handlers.expire_at(work, time.monotonic() + timeout_s)
        try:
            return await _with_timeout(asyncio.wrap_future(work), timeout_s)
        except DeadlineExceeded:
            self._pools.handlers.abandon(work)
            raise


async def _watch(
    future: asyncio.Future[T],
    watch: HandlerWatch,
    first_wait_s: float,
    at_deadline: Callable[[], Awaitable[T]],
    abandon: Callable[[], None],
) -> T:
    wait_s: float | None = first_wait_s
    while True:
        done, _ = await asyncio.wait((future,), timeout=wait_s)
        if done:
            return future.result()
        deadline = watch.deadline
        if deadline is None:  # the handler has not started: it has at least its timeout
            wait_s = first_wait_s
            continue
        left = deadline - time.monotonic()
        if left > 0:
            wait_s = left
            continue
        if not watch.claim_for_loop():  # the handler just returned: the thread ends the call
            wait_s = None
            continue
        abandon()
        future.add_done_callback(_drop_abandoned)
        return await asyncio.shield(at_deadline())


def _drop_abandoned(future: asyncio.Future[Any]) -> None:
    """Retrieve the abandoned thread's outcome, so asyncio does not log it as lost."""
    if not future.cancelled():
        future.exception()


def drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the pipeline under ``BlockingExecutor``)."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return cast(T, stop.value)
    coroutine.close()
    raise RuntimeError("the pipeline suspended under the blocking driver")
