"""``aifr ingest PATH --repo NAME [--watch] [--json]``: fill the encrypted index from a workspace.

Each run prints what changed (added, changed, removed, unchanged), what was skipped and
why, and how many secrets of each type were redacted, and records the same counts in the
audit ledger as ``ingest.completed``. A progress bar shows on a terminal only. With
``--watch`` the workspace is ingested again after each quiet debounce window, until
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, Protocol, runtime_checkable

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from aifr.app import App, build_app, build_ingest_pipeline, open_knowledge_index
from aifr.audit import AuditEvent
from aifr.cli.console import console, err_console, fail, print_json
from aifr.cli.signals import StopOnSignals
from aifr.errors import AifrError
from aifr.ingest import IngestPipeline, IngestReport
from aifr.ingest.watch import WorkspaceWatcher
from aifr.observability.logs import configure_logging
from aifr.redaction import scrub

__all__ = ["ingest"]


@runtime_checkable
class _Closable(Protocol):
    def close(self) -> None: ...


@runtime_checkable
class _Savable(Protocol):
    def save(self) -> None: ...


def _report_json(report: IngestReport, root: Path) -> dict[str, Any]:
    counts = report.counts
    return {
        "repo": report.repo,
        "path": str(root),
        "added": counts.added,
        "changed": counts.changed,
        "removed": counts.removed,
        "unchanged": counts.unchanged,
        "chunks_embedded": report.chunks_embedded,
        "skipped": [
            {"path": scrub(s.path), "reason": s.reason, "detail": scrub(s.detail)}
            for s in report.skipped
        ],
        "redactions": dict(report.redactions),
        "duration_s": round(report.duration_s, 3),
    }


def _print_report(data: dict[str, Any]) -> None:
    console.print(
        Text.assemble(
            ("ingested ", "bold"),
            (data["repo"], "bold cyan"),
            f" from {data['path']} ",
            (f"in {data['duration_s']:.2f}s", "dim"),
        )
    )
    console.print(
        f"  added {data['added']}, changed {data['changed']}, removed {data['removed']}, "
        f"unchanged {data['unchanged']} ({data['chunks_embedded']} chunks embedded)"
    )
    if data["skipped"]:
        console.print(f"  skipped {len(data['skipped'])}:")
        for item in data["skipped"]:
            console.print(
                Text(f"    {item['path']}: {item['reason']} ({item['detail']})", style="yellow")
            )
    redactions = data["redactions"]
    if redactions:
        listed = ", ".join(f"{kind} {count}" for kind, count in redactions.items())
        console.print(f"  secrets redacted: {sum(redactions.values())} ({listed})")
    else:
        console.print("  secrets redacted: 0")


def _run_once(
    app: App, pipeline: IngestPipeline, root: Path, repo: str, *, as_json: bool, one_line: bool
) -> None:
    with Progress(
        TextColumn("ingesting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    ) as bar:
        task = bar.add_task("files", total=None)
        report = pipeline.ingest(
            root, repo, lambda done, total: bar.update(task, completed=done, total=total)
        )
    if isinstance(pipeline.index, _Savable):  # --watch keeps it open: save what changed now
        pipeline.index.save()
    data = _report_json(report, root)
    app.ledger.append(
        AuditEvent(
            kind="ingest.completed",
            principal=app.settings.principal,
            outcome="ok",
            details={k: data[k] for k in ("repo", "added", "changed", "removed", "unchanged")}
            | {
                "skipped": len(report.skipped),
                # a list, not a mapping: the ledger would take "private_key" for a secret's
                # name and hide its count
                "redactions": [{"type": t, "count": n} for t, n in report.redactions.items()],
            },
        )
    )
    if as_json and one_line:  # --watch --json: one report per line, as it happens
        sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
        sys.stdout.flush()
    elif as_json:
        print_json(data)
    else:
        _print_report(data)


def ingest(
    path: Annotated[Path, typer.Argument(help="The workspace folder to ingest.")],
    repo: Annotated[str, typer.Option("--repo", help="Repository name in the index.")],
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep watching; ingest again after each change.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print each report as JSON.")] = False,
    project: Annotated[Path, typer.Option("--project", "-p", help="Project folder.")] = Path(),
) -> None:
    """Ingest a workspace: sanitized, chunked, embedded and stored encrypted in the index."""
    try:
        app = build_app(project)
        index, embedder = open_knowledge_index(app.settings, create=True)
    except AifrError as exc:
        fail(exc)
    configure_logging(app.settings.log_level)
    pipeline = build_ingest_pipeline(app.settings, index=index, embedder=embedder)
    root = path.resolve()
    try:
        _run_once(app, pipeline, root, repo, as_json=as_json, one_line=watch)
        if watch:
            _watch(app, pipeline, root, repo, as_json=as_json)
    except AifrError as exc:
        fail(exc)
    finally:
        if isinstance(index, _Closable):  # the SQLite index saves its graphs on close
            index.close()
        app.close()


def _watch(app: App, pipeline: IngestPipeline, root: Path, repo: str, *, as_json: bool) -> None:
    stop = threading.Event()

    def again(_paths: list[str]) -> None:
        try:
            _run_once(app, pipeline, root, repo, as_json=as_json, one_line=True)
        except AifrError as exc:  # one failed pass (the folder gone a moment) ends nothing
            err_console.print(
                Text.assemble(
                    ("error", "bold red"), " ", (exc.code.value, "dim"), ": ", exc.message
                )
            )

    if not as_json:
        err_console.print(f"watching {root} (Ctrl-C to stop)")
    # SIGTERM sets ``stop`` from a thread of its own: the watcher waits on that event,
    # and a handler setting it could wait for ever on its lock (see aifr.cli.signals).
    with StopOnSignals(stop.set, signals=(signal.SIGTERM,)):
        WorkspaceWatcher(
            root, debounce_ms=app.settings.ingest.debounce_ms, on_change=again, stop_event=stop
        ).run()
