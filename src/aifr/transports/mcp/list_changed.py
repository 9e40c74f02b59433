"""``notifications/tools/list_changed`` when a policy change changes what a caller may see.

Each connection that listed tools is remembered with its caller, its loop, the names it
was shown and the request session it last listed through (the SDK makes a session per
request; notifications on it reach the client over the connection). At most
:data:`MAX_WATCHED` connections are kept, the oldest forgotten first, and one whose
notification fails (it closed) is forgotten. After a policy reload, a grant or a revocation (the engine's change
listeners run in the thread that made the change), each session's list is worked out
again and, where it differs, the notification is sent on that session's loop, so the
client lists tools again. An upstream's own ``list_changed`` (tools, resources or
prompts) is passed to every remembered connection (:meth:`ToolListWatchers.broadcast`).

A connection is known by the SDK's public per-connection object, the client's
``initialize`` parameters (``session.client_params``, one object for the connection's
life). The SDK's low-level request context exposes the ``Connection`` itself only as the
private ``ServerSession._connection`` (the high-level ``Context.connection`` is public,
the low-level ``ServerRequestContext`` has no such field; modelcontextprotocol/python-sdk
#741 asks for it), so aifr does not use it. A connection without client info (a
2026-07-28 client may send none) is keyed by its request session: it is then remembered
once per listing, and told once per listing it made.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aifr.policy import PolicyChange
from aifr.transports.mcp.auth import McpIdentity

__all__ = ["ToolListWatchers"]

logger = logging.getLogger(__name__)

Lister = Callable[[McpIdentity], frozenset[str]]


MAX_WATCHED = 1024


@dataclass
class _Watch:
    session: Any
    who: McpIdentity | None  # None: listed with list_tools = "all"
    loop: asyncio.AbstractEventLoop
    shown: frozenset[str]


def _connection_key(session: Any) -> int:
    # One InitializeRequestParams per connection (public: ServerSession.client_params);
    # the _Watch keeps the session, and through it that object, alive, so ids stay unique.
    params = getattr(session, "client_params", None)
    return id(params if params is not None else session)


class ToolListWatchers:
    """The sessions that listed tools, told when their list changes."""

    def __init__(self, lister: Lister) -> None:
        self._lister = lister
        self._lock = threading.Lock()
        self._watches: OrderedDict[int, _Watch] = OrderedDict()

    def __len__(self) -> int:
        return len(self._watches)

    def remember(self, session: Any, who: McpIdentity | None, shown: frozenset[str]) -> None:
        """Note what the connection of ``session`` (an SDK request session) was just shown."""
        loop = asyncio.get_running_loop()
        key = _connection_key(session)
        with self._lock:
            self._watches[key] = _Watch(session, who, loop, shown)
            self._watches.move_to_end(key)
            while len(self._watches) > MAX_WATCHED:
                self._watches.popitem(last=False)

    def _forget(self, key: int) -> None:
        with self._lock:
            self._watches.pop(key, None)

    def _forget_if_failed(self, key: int, sent: concurrent.futures.Future[None]) -> None:
        if sent.cancelled() or sent.exception() is not None:
            self._forget(key)

    def notify(self, change: PolicyChange) -> None:
        """A policy change took effect: tell each connection whose list it changed."""
        with self._lock:
            watches = list(self._watches.items())
        for key, watch in watches:
            if watch.who is None:
                continue
            now = self._lister(watch.who)
            if now == watch.shown:
                continue
            watch.shown = now
            try:
                sent = asyncio.run_coroutine_threadsafe(
                    watch.session.send_tool_list_changed(), watch.loop
                )
            except RuntimeError:  # the connection's loop is gone
                self._forget(key)
                continue
            sent.add_done_callback(functools.partial(self._forget_if_failed, key))
            logger.info("tools/list_changed sent to %s after %s", watch.who.principal, change.key)

    def broadcast(self, what: str = "tools") -> int:
        """Send ``notifications/<what>/list_changed`` to every remembered connection.

        ``what`` is ``tools``, ``resources`` or ``prompts``. Returns how many were sent.
        """
        send = {
            "tools": "send_tool_list_changed",
            "resources": "send_resource_list_changed",
            "prompts": "send_prompt_list_changed",
        }[what]
        with self._lock:
            watches = list(self._watches.items())
        count = 0
        for key, watch in watches:
            try:
                sent = asyncio.run_coroutine_threadsafe(getattr(watch.session, send)(), watch.loop)
            except RuntimeError:  # the connection's loop is gone
                self._forget(key)
                continue
            sent.add_done_callback(functools.partial(self._forget_if_failed, key))
            count += 1
        return count
