"""``aifr audit verify|tail|export|checkpoint|ship``: read, prove and ship the ledger."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from aifr.app import build_audit_ledger
from aifr.audit import (
    EXPORT_FORMATS,
    AuditLedger,
    AuditRecord,
    Checkpoint,
    CopyReport,
    Outbox,
    VerifyReport,
    Witness,
    compare_with_copy,
    load_or_create_signing_key,
    public_key_hex,
    record_line,
    write_jsonl,
)
from aifr.cli.audit_copy import read_copies
from aifr.cli.console import console, err_console, fail, print_json
from aifr.config import Settings, load_settings
from aifr.errors import AifrError, AuditError, ErrorCode

__all__ = ["CHECKPOINT_FILE", "VERIFY_FILE", "app", "note_verify", "verify_project"]

app = typer.Typer(help="Verify, read, export and ship the audit ledger.", no_args_is_help=True)

CHECKPOINT_FILE = "audit-checkpoint.json"
"""Latest signed checkpoint, kept in the state folder as well as in the database."""

VERIFY_FILE = "audit-verify.json"
"""The outcome of the last ``aifr audit verify`` (or ``aifr doctor``), for ``aifr status``."""

ProjectOption = Annotated[Path, typer.Option("--project", "-p", help="Project folder.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@contextlib.contextmanager
def _ledger(project: Path) -> Iterator[tuple[Settings, AuditLedger]]:
    try:
        settings = load_settings(project, require_project=True)
        ledger = build_audit_ledger(settings)
    except AifrError as exc:
        fail(exc)
    try:
        yield settings, ledger
    except AifrError as exc:
        fail(exc)
    finally:
        ledger.close()


def _key_path(settings: Settings) -> Path:
    return settings.path(settings.audit.signing_key_file)


def _checkpoint_file(settings: Settings) -> Path:
    return settings.state_path / CHECKPOINT_FILE


def _read_checkpoint(path: Path) -> Checkpoint:
    try:
        return Checkpoint.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise AuditError(f"{path}: cannot read checkpoint: {exc.strerror}") from exc
    except ValueError as exc:
        raise AuditError(f"{path}: checkpoint is not JSON: {exc}") from exc


def _line(record: AuditRecord) -> Text:
    event = record.event
    parts: list[str | tuple[str, str]] = [
        (f"{record.seq:>6}", "bold"),
        (record.ts, "dim"),
        (event.kind, "cyan"),
        event.principal,
        event.capability_id or "-",
        event.decision or "-",
        (event.outcome or "-", "green" if event.outcome == "ok" else "red"),
    ]
    line = Text()
    for index, part in enumerate(parts):
        if index:
            line.append("  ")
        if isinstance(part, tuple):
            line.append(part[0], style=part[1])
        else:
            line.append(part)
    return line


def _show(record: AuditRecord, *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(record_line(record) + "\n")
        sys.stdout.flush()
    else:
        console.print(_line(record), soft_wrap=True)


def verify_project(
    settings: Settings, ledger: AuditLedger, given: list[Checkpoint]
) -> VerifyReport:
    """Verify the chain against the project's checkpoints and those the operator gave.

    Checkpoints kept in the database and the state folder count only when the project's
    key signed them: whoever writes those can add their own. A file given with
    ``--checkpoint`` was kept where the database's writers cannot reach, so it holds
    under the key that signed it, even when the project's key is another one since: an
    attacker who truncates the ledger and replaces the signing key must not thereby make
    the operator's own copy of an older checkpoint count for nothing.
    """
    kept = _checkpoint_file(settings)
    stored = [_read_checkpoint(kept)] if kept.exists() else []
    key_path = _key_path(settings)
    trusted = public_key_hex(load_or_create_signing_key(key_path)) if key_path.exists() else None
    own = [c for c in given if trusted is None or c.public_key == trusted]
    report = ledger.verify(trusted_key=trusted, checkpoints=[*stored, *own])
    for signer in sorted({c.public_key for c in given} - {c.public_key for c in own}):
        if not report.ok:
            break
        signed = [c for c in given if c.public_key == signer]
        report = ledger.verify(trusted_key=signer, checkpoints=signed)
    return report


def note_verify(settings: Settings, report: VerifyReport) -> None:
    """Keep when the chain was last verified and how it went, for ``aifr status``.

    Best effort: a state folder that cannot be written must not turn a verify that
    passed into a failure.
    """
    note = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "ok": report.ok,
        "head_seq": report.head_seq,
        "message": report.message,
    }
    with contextlib.suppress(OSError):
        (settings.state_path / VERIFY_FILE).write_text(json.dumps(note) + "\n", encoding="utf-8")


@app.command("verify")
def verify(
    project: ProjectOption = Path(),
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option("--checkpoint", help="Also hold the chain to this checkpoint file."),
    ] = None,
    against_sink: Annotated[
        bool,
        typer.Option(
            "--against-sink",
            help="Also hold the ledger to the copy audit.sink_url holds (NATS JetStream: "
            "the shipped records and the witness's checkpoints).",
        ),
    ] = False,
    sink_url: Annotated[
        list[str] | None,
        typer.Option(
            "--sink",
            help="Also hold the ledger to this NATS sink's copy "
            "(nats://host:port/STREAM[?subjects=PREFIX], as for 'audit ship').",
        ),
    ] = None,
    copy: Annotated[
        list[Path] | None,
        typer.Option(
            "--copy",
            help="Also hold the ledger to an HTTP receiver's copy: the JSON lines it kept.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Walk the chain; exit 1 naming the first modified, removed, inserted or moved record.

    With a sink's copy, also name every shipped record the ledger lost or replaced.
    """
    with _ledger(project) as (settings, ledger):
        given = [_read_checkpoint(path) for path in checkpoint or []]
        copies = read_copies(
            settings, configured=against_sink, urls=sink_url or [], files=copy or []
        )
        given += [c for each in copies for c in each.checkpoints]
        report = verify_project(settings, ledger, given)
        compared = [compare_with_copy(ledger.records(), each) for each in copies]
        note_verify(settings, report)
    ok = report.ok and all(c.ok for c in compared)
    if as_json:
        shown = report.to_dict()
        if copies:
            shown["ok"] = ok
            shown["sinks"] = [c.to_dict() for c in compared]
        print_json(shown)
    else:
        _print_verify(report, compared)
    if not ok:
        raise typer.Exit(1)


def _print_verify(report: VerifyReport, compared: list[CopyReport]) -> None:
    if report.ok:
        console.print(
            Text.assemble(("ok", "green"), f" {report.message} (head {report.head_hash[:16]}…)")
        )
    else:
        err_console.print(
            Text.assemble(
                ("audit chain broken", "bold red"),
                f" at record {report.first_bad_seq} ",
                (str(report.problem), "dim"),
                f": {report.message}",
            )
        )
    for each in compared:
        if each.ok:
            console.print(Text.assemble(("ok", "green"), f" {each.message}"))
        else:
            err_console.print(Text.assemble(("sink copy differs", "bold red"), f" {each.message}"))


@app.command("tail")
def tail(
    project: ProjectOption = Path(),
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many records.", min=0)] = 20,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new records.")
    ] = False,
    principal: Annotated[str | None, typer.Option(help="Only this principal's records.")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between polls with --follow.")] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per line.")] = False,
) -> None:
    """Print the newest records, oldest first; ``--follow`` waits for more."""
    with _ledger(project) as (_, ledger):
        newest = list(ledger.records(principal=principal, limit=lines, newest_first=True))
        for record in reversed(newest):
            _show(record, as_json=as_json)
        position = newest[0].seq if newest else ledger.head().seq
        with contextlib.suppress(KeyboardInterrupt):
            while follow:
                fresh = list(ledger.records(principal=principal, after_seq=position))
                for record in fresh:
                    _show(record, as_json=as_json)
                    position = record.seq
                if not fresh:
                    time.sleep(interval)


@app.command("export")
def export(
    project: ProjectOption = Path(),
    export_format: Annotated[
        str, typer.Option("--format", help="Output format (jsonl).")
    ] = "jsonl",
    since: Annotated[str | None, typer.Option(help="From this ISO time (inclusive, UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this ISO time (exclusive).")] = None,
    principal: Annotated[str | None, typer.Option(help="Only this principal's records.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Export records as JSON lines, filtered by time range and principal."""
    if export_format not in EXPORT_FORMATS:
        fail(
            AuditError(
                f"--format {export_format!r}: supported formats are {', '.join(EXPORT_FORMATS)}",
                code=ErrorCode.CONFIG_INVALID,
            )
        )
    with _ledger(project) as (_, ledger):
        records = ledger.records(since=since, until=until, principal=principal)
        if output is None:
            _export_to_stdout(records)
            return
        try:
            with output.open("w", encoding="utf-8") as handle:
                count = write_jsonl(records, handle)
        except OSError as exc:
            raise AuditError(
                f"--output {output}: cannot write the export: {exc.strerror}",
                code=ErrorCode.CONFIG_INVALID,
                path=str(output),
            ) from exc
        err_console.print(f"exported {count} records to {output}")


def _export_to_stdout(records: Iterator[AuditRecord]) -> None:
    """Write the export to stdout; a write that fails (a full disk) is reported.

    A partial export must never pass for a whole one, nor end in a traceback. stdout is
    then pointed at ``/dev/null`` so the interpreter's last flush cannot fail again. A
    reader that stops early (``| head``) is left to Click, which ends quietly (exit 1).
    """
    try:
        write_jsonl(records, sys.stdout)
        sys.stdout.flush()
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise AuditError(
            f"standard output: cannot write the export: {exc.strerror}", path="-"
        ) from exc


@app.command("checkpoint")
def checkpoint(project: ProjectOption = Path(), as_json: JsonOption = False) -> None:
    """Sign the chain head (ed25519) so removing newer records is detected by verify."""
    with _ledger(project) as (settings, ledger):
        signed = ledger.checkpoint(load_or_create_signing_key(_key_path(settings)))
        target = _checkpoint_file(settings)
        target.write_text(json.dumps(signed.to_dict(), indent=2) + "\n", encoding="utf-8")
    if as_json:
        print_json(signed.to_dict())
    else:
        console.print(
            f"checkpoint of record {signed.seq} signed ({signed.hash[:16]}…), kept in the "
            f"database and {target}; copy it somewhere the database's writers cannot reach"
        )


@app.command("ship")
def ship(
    project: ProjectOption = Path(),
    sink: Annotated[
        str | None, typer.Option(help="nats://HOST:PORT[/STREAM] or http(s)://URL.")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep shipping until interrupted.")
    ] = False,
) -> None:
    """Ship records the sink has not acknowledged yet, in order, from its stored cursor."""
    from aifr.audit.sinks import sink_from_url  # httpx and nats load for this command only

    with _ledger(project) as (settings, ledger):
        url = sink or settings.audit.sink_url
        if url is None:
            raise AuditError(
                "no sink: pass --sink or set audit.sink_url", code=ErrorCode.CONFIG_INVALID
            )
        witness = Witness(
            load_or_create_signing_key(_key_path(settings)),
            every_records=settings.audit.checkpoint_every_records,
            every_s=settings.audit.checkpoint_every_s,
        )
        outbox = Outbox(ledger, sink_from_url(url), witness=witness)
        shipped = asyncio.run(_ship(outbox, follow=follow))
    console.print(f"shipped {shipped} records to {outbox.sink.name}")


async def _ship(outbox: Outbox, *, follow: bool) -> int:
    try:
        if not follow:
            shipped = await outbox.ship_once()
            await outbox.checkpoint_shipped()
            return shipped
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
        return await outbox.run(stop)
    finally:
        await outbox.sink.aclose()
