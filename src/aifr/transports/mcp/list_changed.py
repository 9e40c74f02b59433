"""``notifications/tools/list_changed`` when a policy change changes what a caller may see.

Each connection that listed tools is remembered with its caller, its loop, the names it
was shown and the request session it last listed through (the SDK makes a session per
request; notifications on it reach the client over the connection). At most
:data:`MAX_WATCHED` connections are kept, the oldest forgotten first, and one whose
notification fails (it closed) is forgotten. After a policy reload, a grant or a revocation (the engine's change
listeners run in the thread that made the change), each session's list is worked out
again and, where it differs, the notification is sent on that session's loop, so the
client lists tools again.
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
    who: McpIdentity
    loop: asyncio.AbstractEventLoop
    shown: frozenset[str]


def _connection_key(session: Any) -> int:
    # The SDK keeps the connection on the per-request session without a public name;
    # without it, each session is its own key (a notification per listing).
    return id(getattr(session, "_connection", session))


class ToolListWatchers:
    """The sessions that listed tools, told when their list changes."""

    def __init__(self, lister: Lister) -> None:
        self._lister = lister
        self._lock = threading.Lock()
        self._watches: OrderedDict[int, _Watch] = OrderedDict()

    def __len__(self) -> int:
        return len(self._watches)

    def remember(self, session: Any, who: McpIdentity, shown: frozenset[str]) -> None:
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
