"""``aifr audit verify`` held to the sink's copy: what was cut or rewritten after shipping.

The records and the witness's checkpoints are shipped by ``aifr audit ship`` to the
real NATS JetStream server (a stream and subjects of this test's own) or to a real
HTTP receiver on 127.0.0.1 that appends every body it is POSTed to a file. Then the
ledger is attacked as someone with the database would: its tail cut, its local
checkpoints deleted and new records appended so the chain verifies on its own.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aifr.app import build_audit_ledger
from aifr.audit import AuditEvent, AuditRecord, NatsSink
from aifr.cli.main import app
from aifr.config import init_project, load_settings
from aifr.storage.sqlite import SqliteDatabase

NATS = "nats://127.0.0.1:4222"


def _nats_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=1):
            return True
    except OSError:
        return False


def _project(root: Path, records: int, sink_url: str) -> Path:
    init_project(root)
    with (root / "aifr.toml").open("a", encoding="utf-8") as config:
        config.write(f'\n[audit]\ncheckpoint_every_records = 5\nsink_url = "{sink_url}"\n')
    ledger = build_audit_ledger(load_settings(root))
    for n in range(records):
        ledger.append(AuditEvent(kind="execution", principal="alice", details={"n": n}))
    ledger.close()
    return root


def _originals(project: Path) -> list[AuditRecord]:
    ledger = build_audit_ledger(load_settings(project))
    try:
        return list(ledger.records())
    finally:
        ledger.close()


def _cut_and_rewrite(project: Path, keep: int, forged: int) -> None:
    """Cut the tail, drop the local checkpoints, append records so the chain is whole."""
    database = SqliteDatabase(project / ".aifr" / "aifr.db")
    with database.transaction() as conn:
        conn.execute("DELETE FROM audit_records WHERE seq > ?", (keep,))
        conn.execute("DELETE FROM audit_checkpoints")
    database.close()
    (project / ".aifr" / "audit-checkpoint.json").unlink(missing_ok=True)
    ledger = build_audit_ledger(load_settings(project))
    for n in range(forged):
        ledger.append(AuditEvent(kind="execution", principal="mallory", details={"forged": n}))
    ledger.close()


def _verify(project: Path, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    done = CliRunner().invoke(app, ["audit", "verify", "--json", *args, "--project", str(project)])
    return done.exit_code, json.loads(done.stdout) if done.stdout.strip() else {}


@pytest.fixture
def nats_sink() -> Iterator[str]:
    """A sink URL with a stream and subjects no other test uses; the stream is removed after."""
    if not _nats_reachable():
        pytest.skip("no NATS server with JetStream at 127.0.0.1:4222")
    tag = uuid.uuid4().hex[:10]
    stream = f"AIFR_VERIFY_{tag}"
    yield f"{NATS}/{stream}?subjects=aifrverify.{tag}"

    async def drop() -> None:
        sink = NatsSink(NATS, stream=stream, subject_prefix=f"aifrverify.{tag}")
        try:
            js = await sink._jetstream()
            await js.delete_stream(stream)
        finally:
            await sink.aclose()

    asyncio.run(drop())


def test_verify_against_the_nats_copy_names_the_records_cut_and_rewritten_after_shipping(
    tmp_path: Path, clean_env: dict[str, str], nats_sink: str
) -> None:
    project = _project(tmp_path, 7, nats_sink)
    shipped = CliRunner().invoke(app, ["audit", "ship", "--project", str(project)])
    assert shipped.exit_code == 0, shipped.output
    originals = _originals(project)
    status, intact = _verify(project, "--against-sink")
    assert status == 0, intact
    (copy,) = intact["sinks"]
    assert copy["ok"] is True and copy["shipped"] == 7 and copy["checkpoints"] >= 2
    assert intact["checkpoint_seq"] == 7  # the witness's newest checkpoint, read from NATS

    _cut_and_rewrite(project, keep=4, forged=2)
    alone, _ = _verify(project)
    assert alone == 0  # on its own the rewritten chain verifies: only the copy tells

    status, report = _verify(project, "--against-sink")
    assert status == 1
    assert report["ok"] is False
    assert report["first_bad_seq"] == 5  # the shipped checkpoint of record 5 no longer holds
    (copy,) = report["sinks"]
    assert [r["seq"] for r in copy["replaced"]] == [5, 6]
    assert [r["id"] for r in copy["replaced"]] == [originals[4].id, originals[5].id]
    assert [(r["seq"], r["id"], r["kind"]) for r in copy["removed"]] == [
        (7, originals[6].id, "execution")
    ]
    assert "records 5..6 were replaced after shipping" in copy["message"]
    assert f"record 7 was removed after shipping (7 {originals[6].id}" in copy["message"]

    # The same through --sink URL, and the table output names it too.
    text = CliRunner().invoke(
        app, ["audit", "verify", "--sink", nats_sink, "--project", str(project)]
    )
    assert text.exit_code == 1
    assert "record 7 was removed after shipping" in " ".join(text.stderr.split())


def test_a_cut_tail_alone_is_named_from_the_nats_copy(
    tmp_path: Path, clean_env: dict[str, str], nats_sink: str
) -> None:
    project = _project(tmp_path, 9, nats_sink)
    assert CliRunner().invoke(app, ["audit", "ship", "--project", str(project)]).exit_code == 0
    _cut_and_rewrite(project, keep=6, forged=0)
    status, report = _verify(project, "--sink", nats_sink)
    assert status == 1
    assert (report["first_bad_seq"], report["problem"]) == (7, "truncated")
    (copy,) = report["sinks"]
    assert [r["seq"] for r in copy["removed"]] == [7, 8, 9] and copy["replaced"] == []
    assert "records 7..9 were removed after shipping" in copy["message"]


class _Receiver:
    """A real HTTP receiver on 127.0.0.1 keeping every body it is POSTed, appended to a file."""

    def __init__(self, kept: Path) -> None:
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock, kept.open("ab") as out:
                    out.write(body if body.endswith(b"\n") else body + b"\n")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/audit"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def test_verify_against_the_http_receivers_kept_lines(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    kept = tmp_path / "receiver.jsonl"
    receiver = _Receiver(kept)
    try:
        project = _project(tmp_path / "p", 7, receiver.url)
        shipped = CliRunner().invoke(app, ["audit", "ship", "--project", str(project)])
        assert shipped.exit_code == 0, shipped.output
    finally:
        receiver.stop()
    originals = _originals(project)
    status, intact = _verify(project, "--copy", str(kept))
    assert status == 0 and intact["sinks"][0]["shipped"] == 7

    _cut_and_rewrite(project, keep=5, forged=1)
    status, report = _verify(project, "--copy", str(kept))
    assert status == 1
    (copy,) = report["sinks"]
    assert [r["id"] for r in copy["replaced"]] == [originals[5].id]
    assert [r["id"] for r in copy["removed"]] == [originals[6].id]
    assert "record 6 was replaced" in copy["message"] and "record 7 was removed" in copy["message"]

    refused = CliRunner().invoke(
        app, ["audit", "verify", "--against-sink", "--project", str(project)]
    )
    assert refused.exit_code == 2
    assert "--copy FILE" in " ".join(refused.stderr.split())
