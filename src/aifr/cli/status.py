"""``aifr status``: one screen on what the project is doing now.

Runs by state, pending approvals, the workers seen, what waits to be shipped or delivered,
the audit head,
and when the chain was last verified and checkpointed. It reads only; ``aifr doctor``
is the command that checks.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from aifr.app import App, build_app
from aifr.cli.audit import VERIFY_FILE
from aifr.cli.console import console, fail, heading, print_json
from aifr.errors import AifrError, ConfigError
from aifr.invocation import ApprovalStatus
from aifr.redaction import redact_url
from aifr.workflows import ACTIVE_STATES
from aifr.workflows.presence import known_workers

if TYPE_CHECKING:
    from aifr.observability.metrics import RuntimeMetrics

__all__ = ["attach_metrics", "collect_status", "metrics_renderer", "queue_depth", "status"]

_PENDING_LIMIT = 100_000


def _last_verify(app: App) -> dict[str, Any] | None:
    path = app.settings.state_path / VERIFY_FILE
    try:
        note = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # never verified, or a note cut short: nothing to show
        return None
    return note if isinstance(note, dict) else None


def _audit_backlog(app: App, head_seq: int) -> int | None:
    url = app.settings.audit.sink_url
    if url is None:
        return None
    from aifr.audit.sinks import sink_name  # httpx and nats load only where a sink is set

    return max(0, head_seq - app.ledger.store.shipped_seq(sink_name(url)))


def collect_status(app: App) -> dict[str, Any]:
    """What ``aifr status`` shows, as a JSON-safe dict."""
    head = app.ledger.head()
    sink = app.settings.audit.sink_url
    checkpoints = app.ledger.checkpoints()
    last = checkpoints[-1] if checkpoints else None
    pending = app.approvals.list(status=ApprovalStatus.PENDING, limit=_PENDING_LIMIT)
    return {
        "runs": app.runs.count_by_state(),
        "pending_approvals": len(pending),
        "audit": {
            "head_seq": head.seq,
            "sink": None if sink is None else redact_url(sink),
            "outbox_backlog": _audit_backlog(app, head.seq),
            "last_verify": _last_verify(app),
            "last_checkpoint": None if last is None else {"seq": last.seq, "ts": last.ts},
        },
        "notifications_pending": app.runs.pending(),
        "workers": _workers_by_state(app),
    }


def _workers_by_state(app: App) -> dict[str, int]:
    """How many registered workers are live, lost or exited (states with none left out)."""
    known = known_workers(app.workers, app.settings.workflows.lease_ttl_s)
    return dict(Counter(state for _, state in known))


def queue_depth(runs_by_state: dict[str, int]) -> int:
    """Runs a worker drives without anyone's input."""
    return sum(runs_by_state.get(state.value, 0) for state in ACTIVE_STATES)


def attach_metrics(app: App) -> RuntimeMetrics:
    """Count ``app``'s invocations and read its levels (what ``aifr status`` shows) per scrape.

    Raises:
        ConfigError: prometheus-client (the ``metrics`` extra) is not installed.
    """
    try:
        from aifr.observability.metrics import Levels, RuntimeMetrics
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "metrics need prometheus-client: pip install 'aifr[metrics]'", key="metrics"
        ) from exc
    metrics = RuntimeMetrics()
    app.runtime.events.subscribe(metrics)

    def read() -> Levels:
        state = collect_status(app)
        return Levels(
            runs_by_state=state["runs"],
            queue_depth=queue_depth(state["runs"]),
            audit_outbox_backlog=state["audit"]["outbox_backlog"],
            notifications_pending=state["notifications_pending"],
            workers_by_state=state["workers"],
        )

    metrics.watch_levels(read)
    return metrics


def metrics_renderer(app: App) -> Callable[[], tuple[bytes, str]]:
    """:func:`attach_metrics`, rendered as Prometheus text for a route to serve.

    Raises:
        ConfigError: prometheus-client (the ``metrics`` extra) is not installed.
    """
    metrics = attach_metrics(app)
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest  # installed: checked above

    def render() -> tuple[bytes, str]:
        return generate_latest(metrics.registry), CONTENT_TYPE_LATEST

    return render


def _render(state: dict[str, Any]) -> None:
    heading("runs")
    runs = Table("state", "runs", expand=False)
    for name, count in state["runs"].items():
        runs.add_row(name, str(count))
    console.print(runs if state["runs"] else "no workflow runs")
    heading("now")
    audit = state["audit"]
    verify = audit["last_verify"]
    checkpoint = audit["last_checkpoint"]
    rows = [
        ("pending approvals", str(state["pending_approvals"])),
        ("notifications pending", str(state["notifications_pending"])),
        (
            "workers",
            ", ".join(f"{n} {name}" for name, n in sorted(state["workers"].items()))
            or "none registered",
        ),
        ("audit head", f"record {audit['head_seq']}"),
        (
            "audit outbox backlog",
            "no sink configured"
            if audit["outbox_backlog"] is None
            else f"{audit['outbox_backlog']} records for {audit['sink']}",
        ),
        (
            "last verify",
            "never"
            if verify is None
            else f"{verify['ts']} {'ok' if verify['ok'] else 'FAILED'}: {verify['message']}",
        ),
        (
            "last checkpoint",
            "never" if checkpoint is None else f"record {checkpoint['seq']} at {checkpoint['ts']}",
        ),
    ]
    table = Table("", "", show_header=False, expand=False)
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)


def status(
    project: Annotated[Path, typer.Option("--project", "-p", help="Project folder.")] = Path(),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Runs by state, pending approvals, workers, outbox backlog, last verify and checkpoint."""
    try:
        app = build_app(project, require_project=True)
    except AifrError as exc:
        fail(exc)
    try:
        state = collect_status(app)
    except AifrError as exc:
        fail(exc)
    finally:
        app.close()
    if as_json:
        print_json(state)
    else:
        _render(state)
