"""One third-party MCP server aifr talks to as a client: started lazily, restarted after a crash.

The connection (the SDK's ``Client`` over stdio or streamable HTTP) lives on an event
loop in a thread of its own, held by one task from connect to close, as the SDK's
anyio streams require. Calls come from any thread or loop (``Runtime.ainvoke`` on the
server's loop, ``Runtime.invoke`` on its background loop, a workflow worker) and are
handed to that loop, so no caller's loop ever owns the upstream.

A call that finds the connection dead (the process exited, the socket closed) fails with
``transport.upstream_unavailable`` naming the upstream and why, and the next call starts
it again, no sooner than the backoff after the last failure allows (doubling, capped).
While idle, an open connection is pinged every ``health_check_s``; one that does not
answer is closed, so the next call restarts it instead of waiting on a hung server.

What the server says on its own passes through: progress notifications of a call go
to the caller's ``progress`` callback (on the caller's loop), and a
``notifications/tools/list_changed`` (or the resources' or prompts') makes the
connection list the tools again, work out drift against the reviewed list, and tell
the listeners (:meth:`Upstream.on_change`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TextIO, TypeVar

import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPDeprecationWarning

from aifr.config import UpstreamSettings
from aifr.errors import AifrError, ErrorCode, PolicyError, TransportError
from aifr.transports.mcp.upstream_catalog import changed_tools

__all__ = ["BACKOFF_S", "ChangeListener", "Progress", "Upstream"]

logger = logging.getLogger(__name__)

BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
"""Seconds to wait before the n-th restart in a row (the last repeats)."""

_STOP_TIMEOUT_S = 5.0
_WINDOW_S = 60.0

SecretLookup = Callable[[str], str]
Progress = Callable[[float, float | None, str | None], Coroutine[Any, Any, None]]
"""Where a call's progress goes: ``(progress, total, message)``, awaited on the caller's loop."""
ChangeListener = Callable[["Upstream", str], None]
"""Told ``(upstream, what)`` when the server said its ``tools``, ``resources`` or ``prompts`` changed."""
_T = TypeVar("_T")


class Upstream:
    """A client connection to one upstream MCP server, safe to call from any thread.

    Args:
        config: how to reach the server and what its tools may do.
        resolve_secret: turns a ``secret://NAME`` reference into its value.
        errlog: where a stdio server's stderr goes.
        clock: monotonic time, for backoff and the call budget.
    """

    def __init__(
        self,
        config: UpstreamSettings,
        resolve_secret: SecretLookup,
        *,
        errlog: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.name = config.name
        self._resolve = resolve_secret
        self._errlog = errlog
        self._clock = clock
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._hosted = False
        self._client: Client | None = None
        self._stop: asyncio.Event | None = None
        self._holder: asyncio.Future[None] | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._calls: collections.deque[float] = collections.deque()
        self.last_error: str | None = None
        self.starts = 0
        self.server: types.Implementation | None = None
        self.tools: list[types.Tool] = []
        self.reviewed: list[types.Tool] | None = None
        self.drift: frozenset[str] = frozenset()
        self.capabilities: types.ServerCapabilities | None = None
        self.pings_failed = 0
        self._listeners: list[ChangeListener] = []

    def on_change(self, listener: ChangeListener) -> None:
        """Tell ``listener(upstream, what)`` when the server says a list changed.

        ``what`` is ``tools`` (told after they were listed again and drift worked
        out), ``resources`` or ``prompts``; the listener runs on the upstream's thread.
        """
        self._listeners.append(listener)

    # -- facts ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a connection is open now."""
        return self._client is not None

    @property
    def server_version(self) -> str:
        """The version the server reported when it last started ('' before that)."""
        return self.server.version if self.server is not None else ""

    def audit_facts(self, tool: str) -> dict[str, Any]:
        """What a call's audit record says about where it went."""
        return {
            "name": self.name,
            "tool": tool,
            "server": self.server.name if self.server is not None else None,
            "server_version": self.server_version or None,
            "transport": "stdio" if self.config.command else "http",
        }

    # -- the loop -----------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name=f"aifr-upstream-{self.name}", daemon=True
            )
            thread.start()
            self._loop, self._thread = loop, thread
        return self._loop

    def host_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Keep the connection on ``loop`` (a server's own loop) instead of a thread's.

        Calls made on that loop then await the upstream directly, without two
        cross-thread hand-offs per call; calls from elsewhere are handed to it as
        before. No effect once the upstream has its own loop.
        """
        with self._lock:
            if self._loop is None:
                self._loop, self._hosted = loop, True

    def _on_own_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _submit(self, work: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(work, self._ensure_loop())

    # -- connecting ---------------------------------------------------------------------

    def _target(self) -> StdioServerParameters | Any:
        config = self.config
        if config.command:
            env = {key: self._secret(value) for key, value in config.env.items()}
            return StdioServerParameters(
                command=config.command[0], args=config.command[1:], env=env, cwd=config.cwd
            )
        headers = {key: self._secret(value) for key, value in config.headers.items()}
        assert config.url is not None  # noqa: S101  # the settings hold one of the two
        client = httpx2.AsyncClient(headers=headers, timeout=config.timeout_s)
        return streamable_http_client(config.url, http_client=client)

    def _secret(self, value: str) -> str:
        return self._resolve(value) if value.startswith("secret://") else value

    async def _hold(self, ready: asyncio.Future[None]) -> None:
        """Open the connection, publish it, and keep it open until stopped or broken."""
        stop = self._stop = asyncio.Event()
        errlog = self._errlog
        mine: Client | None = None
        try:
            target = self._target()
            kwargs: dict[str, Any] = {
                "mode": "legacy",
                "cache": None,
                "message_handler": self._on_message,
            }
            if isinstance(target, StdioServerParameters) and errlog is not None:
                from mcp.client.stdio import stdio_client

                target = stdio_client(target, errlog=errlog)
            async with Client(target, **kwargs) as client:
                self.server = client.server_info
                self.capabilities = client.server_capabilities
                self.tools = await _all_tools(client)
                self._client = mine = client
                ready.set_result(None)
                await self._watch(client, stop)
        except BaseException as exc:  # noqa: BLE001  # any end of the connection is reported
            if not ready.done():
                ready.set_exception(exc)
            else:
                self.last_error = f"{type(exc).__name__}: {exc}"
        finally:
            if self._client is mine:  # a newer connection may have replaced this one
                self._client = None

    async def _watch(self, client: Client, stop: asyncio.Event) -> None:
        """Wait for the stop, pinging the server whenever it was idle for ``health_check_s``."""
        interval = self.config.health_check_s
        while not stop.is_set():
            if interval is None:
                await stop.wait()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
                return
            try:
                await asyncio.wait_for(_ping(client), min(interval, self.config.timeout_s))
            except Exception as exc:  # noqa: BLE001  # a hung or broken server: close it
                self.pings_failed += 1
                self.last_error = f"health check failed: {_describe(exc)}"
                logger.warning("upstream %s: %s; closing it", self.name, self.last_error)
                if self._client is client:
                    self._client = None
                return

    async def _on_message(self, message: Any) -> None:
        """The server's own notifications: a changed list is told to the listeners."""
        if isinstance(message, types.ToolListChangedNotification):
            client = self._client
            if client is not None:
                try:
                    self.tools = await _all_tools(client)
                except Exception as exc:  # noqa: BLE001  # keep the old list, say why
                    logger.warning("upstream %s: relisting tools failed: %s", self.name, exc)
                    return
                if self.reviewed is not None:
                    self.drift = changed_tools(self.reviewed, self.tools)
                logger.info(
                    "upstream %s: tools changed (drifted: %s)",
                    self.name,
                    ", ".join(sorted(self.drift)) or "none",
                )
            self._tell("tools")
        elif isinstance(message, types.ResourceListChangedNotification):
            self._tell("resources")
        elif isinstance(message, types.PromptListChangedNotification):
            self._tell("prompts")

    def _tell(self, what: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(self, what)
            except Exception:  # a listener's bug must not break the connection
                logger.exception("upstream %s: a %s-changed listener failed", self.name, what)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        holder = self._holder = asyncio.ensure_future(self._hold(ready))
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.config.timeout_s)
        except BaseException:
            holder.cancel()
            raise

    def start(self) -> None:
        """Connect now if not connected (the first call does it anyway).

        Raises:
            TransportError: ``transport.upstream_unavailable``: the server does not start
                or answer, or it failed a moment ago and its backoff has not passed.
        """
        if self._hosted and self._on_own_loop():
            raise TransportError(  # it would wait on the loop it blocks
                f"upstream {self.name!r} must be started from outside its loop "
                "(asyncio.to_thread(upstream.start))",
                code=ErrorCode.TRANSPORT_FAILED,
                upstream=self.name,
            )
        with self._lock:
            if self._client is not None:
                return
            now = self._clock()
            if now < self._retry_at:
                raise self._unavailable(
                    f"it failed ({self.last_error}); next start in {self._retry_at - now:.1f}s"
                )
            try:
                self._submit(self._open()).result(self.config.timeout_s + 5)
            except AifrError:
                self._failed("start failed")
                raise
            except BaseException as exc:  # foreign: the SDK, the process
                self.last_error = _describe(exc)
                self._failed("start failed")
                raise self._unavailable(f"it did not start: {self.last_error}") from exc
            self.starts += 1
            self._failures = 0
            if self.reviewed is not None:
                self.drift = changed_tools(self.reviewed, self.tools)
                if self.drift:
                    logger.warning(
                        "upstream %s: tools changed since reviewed: %s",
                        self.name,
                        ", ".join(sorted(self.drift)),
                    )
            logger.info("upstream %s started (%s)", self.name, self.server_version)

    def _failed(self, what: str) -> None:
        self._failures += 1
        delay = BACKOFF_S[min(self._failures, len(BACKOFF_S) - 1)]
        self._retry_at = self._clock() + delay
        logger.warning(
            "upstream %s: %s (%s); retry in %.1fs", self.name, what, self.last_error, delay
        )

    def _unavailable(self, why: str) -> TransportError:
        return TransportError(
            f"upstream MCP server {self.name!r} is unavailable: {why}",
            code=ErrorCode.TRANSPORT_UPSTREAM_UNAVAILABLE,
            upstream=self.name,
        )

    # -- calling ------------------------------------------------------------------------

    def _spend(self) -> None:
        limit = self.config.max_calls_per_minute
        if limit is None:
            return
        with self._lock:
            now = self._clock()
            while self._calls and self._calls[0] <= now - _WINDOW_S:
                self._calls.popleft()
            if len(self._calls) >= limit:
                raise PolicyError(
                    f"upstream {self.name!r} allows {limit} calls per minute; "
                    f"try again in {self._calls[0] + _WINDOW_S - now:.0f}s",
                    code=ErrorCode.POLICY_RATE_LIMITED,
                    upstream=self.name,
                )
            self._calls.append(now)

    async def call(
        self, tool: str, arguments: dict[str, Any], *, progress: Progress | None = None
    ) -> types.CallToolResult:
        """Call ``tool`` on the server from any loop; starts it first if needed.

        ``progress`` gets the server's progress notifications for this call, awaited on
        the caller's loop (the upstream is asked for them only when it is given).

        Raises:
            TransportError: ``transport.upstream_unavailable`` (not running, crashed
                during the call, or no answer in ``timeout_s``).
            PolicyError: ``policy.rate_limited``: over ``max_calls_per_minute``.
        """
        self._spend()
        if self._client is None:
            await asyncio.to_thread(self.start)
        if tool in self.drift:
            raise TransportError(
                f"upstream {self.name!r} tool {tool!r} changed since its tool list was "
                "reviewed (added, removed or a new input schema); review it with "
                "'aifr upstreams list' before it can be called",
                code=ErrorCode.TRANSPORT_UPSTREAM_DRIFT,
                upstream=self.name,
                tool=tool,
            )
        here = self._on_own_loop()
        relay: ProgressFnT | None = None
        if progress is not None:
            relay = _relay(progress, None if here else asyncio.get_running_loop())
        try:
            if here:  # hosted on this loop: no hand-off
                return await self._call(tool, arguments, relay)
            return await asyncio.wrap_future(self._submit(self._call(tool, arguments, relay)))
        except AifrError:
            raise
        except BaseException as exc:  # the connection broke under the call
            self.last_error = _describe(exc)
            with self._lock:
                self._drop()
                self._failed("call failed")
            raise self._unavailable(
                f"the call to {tool!r} failed ({self.last_error}); it will be restarted"
            ) from exc

    async def _call(
        self, tool: str, arguments: dict[str, Any], relay: ProgressFnT | None
    ) -> types.CallToolResult:
        client = self._client
        if client is None:
            raise self._unavailable(f"it stopped ({self.last_error or 'no reason given'})")
        return await client.call_tool(
            tool, arguments, read_timeout_seconds=self.config.timeout_s, progress_callback=relay
        )

    async def request(
        self, work: Callable[[Client], Awaitable[_T]], *, budgeted: bool = False
    ) -> _T:
        """Run ``work(client)`` on the connection (starting it if needed), from any loop.

        For the read-only requests the gateway passes through (resources, prompts).
        ``budgeted`` counts it against ``max_calls_per_minute`` as a tool call is (a
        resource read or prompt get; listings are not counted).

        Raises:
            TransportError: ``transport.upstream_unavailable``.
            PolicyError: ``policy.rate_limited``: ``budgeted`` and over the budget.
        """
        if budgeted:
            self._spend()
        if self._client is None:
            await asyncio.to_thread(self.start)

        async def run() -> _T:
            client = self._client
            if client is None:
                raise self._unavailable(f"it stopped ({self.last_error or 'no reason given'})")
            return await asyncio.wait_for(work(client), self.config.timeout_s)

        if self._on_own_loop():
            return await run()
        return await asyncio.wrap_future(self._submit(run()))

    def ping(self) -> float:
        """Round-trip seconds of an MCP ping (starting the server if needed).

        Raises:
            TransportError: the server does not start or answer.
        """
        self.start()
        started = time.perf_counter()

        async def ping() -> None:
            client = self._client
            if client is None:
                raise self._unavailable("it stopped")
            await asyncio.wait_for(_ping(client), self.config.timeout_s)

        try:
            self._submit(ping()).result(self.config.timeout_s + 5)
        except AifrError:
            raise
        except BaseException as exc:  # foreign: the SDK, the process
            raise self._unavailable(f"no answer to ping: {_describe(exc)}") from exc
        return time.perf_counter() - started

    # -- stopping -----------------------------------------------------------------------

    def _drop(self) -> None:
        """Close the connection (the process with it), keeping the loop."""
        loop, stop = self._loop, self._stop
        self._client = None
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)

    def close(self) -> None:
        """Stop the server and the loop; a later call starts both again."""
        with self._lock:
            loop, thread = self._loop, self._thread
            if self._hosted:  # the loop is its owner's: stop the connection only
                with contextlib.suppress(RuntimeError):  # that loop has ended already
                    self._drop()
                self._client, self._loop, self._hosted = None, None, False
                return
            if loop is None or thread is None:
                return
            self._drop()

            async def drain() -> None:
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.gather(*tasks, return_exceptions=True), _STOP_TIMEOUT_S
                    )

            with contextlib.suppress(BaseException):
                asyncio.run_coroutine_threadsafe(drain(), loop).result(_STOP_TIMEOUT_S + 1)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_STOP_TIMEOUT_S)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None


def _ping(client: Client) -> Coroutine[Any, Any, Any]:
    """An MCP ping: deprecated by the 2026-07-28 protocol, which upstreams here (legacy mode) speak."""
    with warnings.catch_warnings():  # the SDK warns on the call, before anything is sent
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        return client.send_ping()


def _relay(sink: Progress, loop: asyncio.AbstractEventLoop | None) -> ProgressFnT:
    """A progress callback for the upstream's loop that hands each update to ``loop``.

    ``None``: the caller is on the upstream's loop, and ``sink`` is awaited there.
    """

    async def relay(progress: float, total: float | None, message: str | None) -> None:
        if loop is None:
            await sink(progress, total, message)
            return
        sent = asyncio.run_coroutine_threadsafe(sink(progress, total, message), loop)
        with contextlib.suppress(Exception):  # the caller left: drop the update
            await asyncio.wrap_future(sent)

    return relay


async def _all_tools(client: Client) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def _describe(exc: BaseException) -> str:
    """A foreign exception in one line; an exception group by its first leaf."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
