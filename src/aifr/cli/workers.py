"""``aifr workers``: the worker processes sharing the state database, on every machine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from aifr.app import build_app
from aifr.cli.console import console, fail, print_json
from aifr.errors import AifrError
from aifr.workflows.presence import known_workers

__all__ = ["workers"]

_STYLE = {"live": "green", "lost": "red", "exited": "yellow"}


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def workers(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    project: Annotated[Path, typer.Option("--project", "-p", help="Project folder.")] = Path(),
) -> None:
    """List worker processes: host, pid, runs held, last seen; lost ones stay a day."""
    try:
        app = build_app(project, require_project=True)
    except AifrError as exc:
        fail(exc)
    try:
        now = time.time()
        known = known_workers(app.workers, app.settings.workflows.lease_ttl_s, now)
    except AifrError as exc:
        fail(exc)
    finally:
        app.close()
    if as_json:
        print_json(
            [
                {
                    "id": w.id,
                    "state": state,
                    "host": w.host,
                    "pid": w.pid,
                    "concurrency": w.concurrency,
                    "runs": w.runs,
                    "version": w.version,
                    "started_at": w.started_at,
                    "seen_at": w.seen_at,
                }
                for w, state in known
            ]
        )
        return
    if not known:
        console.print("no workers (start one: aifr worker)")
        return
    table = Table(title=f"{len(known)} workers", title_justify="left")
    table.add_column("id", no_wrap=True)
    for column in ("state", "host", "pid", "runs", "concurrency", "started", "last seen"):
        table.add_column(column)
    for w, state in known:
        table.add_row(
            w.id, Text(state, style=_STYLE[state]), w.host, str(w.pid), str(w.runs),
            str(w.concurrency), _when(w.started_at), f"{now - w.seen_at:.0f}s ago",
        )  # fmt: skip
    console.print(table)
