"""Watching a workspace: changed paths are handed over once writes settle (debounced).

Changes are grouped until the workspace has been quiet for ``debounce_ms`` (and at most
four windows after the first change, so a steady stream of writes still gets ingested).
Paths under ``.git/`` and ``.aifr/`` are never reported: the index itself lives in
``.aifr/``, and reporting its own writes would re-ingest forever.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import watchfiles

from aifr.ingest.enumerate import NEVER_ENTERED

__all__ = ["WorkspaceWatcher"]

logger = logging.getLogger(__name__)


class WorkspaceWatcher:
    """Calls ``on_change`` with the changed paths (relative, sorted) after each quiet window."""

    def __init__(
        self,
        root: Path,
        *,
        debounce_ms: int,
        on_change: Callable[[list[str]], None],
        stop_event: threading.Event | None = None,
    ) -> None:
        self.root = root.resolve()
        self.debounce_ms = max(1, debounce_ms)
        self.on_change = on_change
        self.stop_event = stop_event or threading.Event()

    def _relevant(self, _change: watchfiles.Change, path: str) -> bool:
        try:
            parts = Path(path).relative_to(self.root).parts
        except ValueError:
            return False
        return not NEVER_ENTERED.intersection(parts)

    def run(self) -> None:
        """Watch until ``stop_event`` is set (or the process is interrupted)."""
        for changes in watchfiles.watch(
            self.root,
            watch_filter=self._relevant,
            step=self.debounce_ms,
            debounce=4 * self.debounce_ms,
            stop_event=self.stop_event,
            raise_interrupt=False,
        ):
            paths = sorted({Path(path).relative_to(self.root).as_posix() for _, path in changes})
            logger.info("workspace changed: %d paths", len(paths))
            self.on_change(paths)
