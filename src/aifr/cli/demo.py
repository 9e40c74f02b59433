"""``aifr demo``: an agent rotates a config file, governed, approved, durable and undone.

The demo creates a project, lists its capabilities, starts a small health endpoint on
127.0.0.1 and runs the ``rotate-config`` workflow twice on the standard library:

1. the plan: each step's risk and policy decision, before anything runs;
2. a run that pauses for an approval (the agent cannot approve itself; bob from ops
   does), then completes;
3. a run whose health check fails after the new config is written: the saga restores
   the config byte for byte and removes the backup;
4. the audit ledger verified, and the second run's story read back from it.
"""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, ClassVar

import typer
from rich.table import Table
from rich.text import Text

from aifr.app import App, build_app
from aifr.cli.capabilities import list_capabilities
from aifr.cli.console import console, fail, heading
from aifr.cli.run import render_plan, render_run
from aifr.config import init_project
from aifr.errors import AifrError
from aifr.workflows import RunView, StepState

__all__ = ["demo"]

_DEMO_MODULE = "demo_capabilities"
_AGENT = "deploy-bot"
_APPROVER = "bob"
_CONFIG = "config/app.conf"
_OLD = "replicas = 2\nlog_level = info\n"
_NEW = "replicas = 4\nlog_level = info\n"
_NEWER = "replicas = 8\nlog_level = debug\n"


def _asset(name: str) -> str:
    return (resources.files("aifr.cli") / "demo_project" / name).read_text(encoding="utf-8")


def _prepare(directory: Path) -> None:
    init_project(directory)
    (directory / f"{_DEMO_MODULE}.py").write_text(_asset(f"{_DEMO_MODULE}.py"), encoding="utf-8")
    (directory / "policies" / "default.yaml").write_text(_asset("demo-policy.yaml"), "utf-8")
    (directory / "workflows" / "rotate-config.yaml").write_text(
        _asset("rotate-config.yaml"), encoding="utf-8"
    )
    config = directory / "aifr.toml"
    text = config.read_text(encoding="utf-8")
    text = text.replace("capability_modules = []", f'capability_modules = ["{_DEMO_MODULE}"]')
    text = text.replace(
        "allow_hosts = []",
        'allow_hosts = ["127.0.0.1"]\nallow_schemes = ["http", "https"]\n'
        "allow_private_addresses = true",
    )
    config.write_text(text, encoding="utf-8")
    (directory / "config").mkdir()
    (directory / _CONFIG).write_text(_OLD, encoding="utf-8")


class _Health(http.server.BaseHTTPRequestHandler):
    healthy: ClassVar[list[bool]] = [True]

    def do_GET(self) -> None:
        if not self.healthy[0]:
            self.close_connection = True
            self.connection.close()
            return
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        """Keep the demo's output to what the demo prints."""


@contextmanager
def _health_endpoint() -> Iterator[str]:
    _Health.healthy[0] = True
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, name="demo-health", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()


def _approve(app: App, view: RunView) -> None:
    approval_id = view.step("write").approval_id
    assert approval_id is not None  # noqa: S101  # the run is waiting on this step
    console.print(
        Text.assemble(("paused", "yellow"), f": step 'write' waits for approval {approval_id}")
    )
    try:
        app.approvals.approve(approval_id, _AGENT)
    except AifrError as exc:
        console.print(
            Text.assemble(f"  {_AGENT} tries to approve its own request: ", (exc.code.value, "red"))
        )
    app.approvals.approve(approval_id, _APPROVER, comment="looks right")
    console.print(Text.assemble(f"  {_APPROVER} (ops) approves it: ", ("approved", "green")))


def _rotate(app: App, content: str, health_url: str) -> RunView:
    engine = app.workflows
    spec = app.workflow("rotate-config")
    inputs = {"path": _CONFIG, "content": content, "health_url": health_url}
    view = engine.start(spec, inputs, _AGENT)
    console.print(render_run(view))
    if view.step("write").state is StepState.WAITING_APPROVAL:
        _approve(app, view)
        view = engine.resume(view.run.id)
        console.print(render_run(view))
    return view


_SHORT = {"ALLOW": "allow", "DENY": "deny", "REQUIRE_APPROVAL": "approval"}


def _story(app: App, run_id: str) -> Table:
    table = Table(title=f"audit trail of {run_id}", title_justify="left")
    for column in ("seq", "event", "by", "step", "policy", "outcome"):
        table.add_column(column)
    waited_on = _approvals(app, run_id)
    for record in app.ledger.records():
        event = record.event
        details = event.details
        if event.run_id != run_id and details.get("approval_id") not in waited_on:
            continue
        kind = event.kind
        if kind == "invocation":
            kind = f"call {event.capability_id}"
        policy = (
            f"{_SHORT.get(event.decision or '', '-')} ({event.rule_id})" if event.rule_id else "-"
        )
        outcome = event.outcome or "-"
        table.add_row(
            str(record.seq),
            kind.removeprefix("workflow."),
            event.principal,
            str(details.get("step_id") or "-"),
            policy if kind.startswith("call") else "-",
            Text(outcome, style="green" if outcome in ("ok", "approved") else "red"),
        )
    return table


def _approvals(app: App, run_id: str) -> set[str]:
    return {s.approval_id for s in app.workflows.view(run_id).steps if s.approval_id}


def _scenario(app: App, directory: Path) -> None:
    config = directory / _CONFIG
    with _health_endpoint() as health_url:
        heading("2. The plan: each step's risk and policy decision, nothing runs")
        spec = app.workflow("rotate-config")
        planned = app.workflows.plan(
            spec, {"path": _CONFIG, "content": _NEW, "health_url": health_url}, _AGENT
        )
        console.print(render_plan(spec, planned, _AGENT))

        heading("3. Rotate the config: an approval pause, then completion")
        _rotate(app, _NEW, health_url)
        console.print(f"{_CONFIG} now holds: {config.read_text()!r}")

        heading("4. Rotate again; the service fails its health check")
        _Health.healthy[0] = False
        failed = _rotate(app, _NEWER, health_url)
    restored = config.read_text()
    backups = sorted(p.name for p in (directory / "backups").glob("*.bak"))
    console.print(
        Text.assemble(
            "run ended ",
            (failed.state.value, "magenta"),
            f" (failed step: {failed.run.failed_step}); {_CONFIG} restored to {restored!r}: ",
            ("byte-identical", "green") if restored == _NEW else ("NOT restored", "red"),
        )
    )
    console.print(f"backups left: {len(backups)} (the failed run's backup was removed)")

    heading("5. The audit ledger: verified, and the whole story")
    report = app.ledger.verify()
    status = ("ok", "green") if report.ok else ("BROKEN", "red")
    console.print(
        Text.assemble(
            "aifr audit verify: ", status, f", {app.ledger.head().seq} records in the chain"
        )
    )
    console.print(_story(app, failed.run.id))


def demo(
    directory: Annotated[Path, typer.Argument(help="Where to create the demo project.")] = Path(
        ".demo"
    ),
) -> None:
    """Create a demo project and walk through a governed, approved, undone workflow."""
    if directory.exists():
        shutil.rmtree(directory)
    try:
        _prepare(directory)
        app = build_app(directory, require_project=True)
    except AifrError as exc:
        fail(exc)
    heading("1. Capabilities registered (stdlib and the project's typed functions)")
    list_capabilities(project=directory)
    try:
        _scenario(app, directory)
    except AifrError as exc:
        fail(exc)
    finally:
        app.close()
    console.print(
        f"\nDemo project left in {directory}/ (try: aifr runs list -p {directory}, "
        f"aifr audit verify -p {directory})"
    )
