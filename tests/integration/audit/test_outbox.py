"""The outbox ships the ledger in order through outages: a real HTTP collector and NATS."""

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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from aifr.app import build_audit_ledger
from aifr.audit import (
    AuditEvent,
    AuditLedger,
    HttpSink,
    NatsSink,
    Outbox,
    Witness,
    load_or_create_signing_key,
    sink_from_url,
)
from aifr.cli.main import app
from aifr.config import init_project, load_settings
from aifr.errors import AifrError, ErrorCode
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.audit import open_sqlite_ledger

NATS_URL = "nats://127.0.0.1:4222"


class _Collector:
    """A real HTTP server on 127.0.0.1 that stores the JSON lines it receives."""

    def __init__(self, port: int, status: int = 200) -> None:
        self.lines: list[dict] = []  # type: ignore[type-arg]
        self.checkpoints: list[dict] = []  # type: ignore[type-arg]
        self.status = status
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if collector.status != 200:
                    pass
                elif self.headers["Content-Type"] == "application/json":
                    collector.checkpoints.append(json.loads(body)["checkpoint"])
                else:
                    collector.lines.extend(json.loads(line) for line in body.decode().splitlines())
                self.send_response(collector.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[AuditLedger]:
    database = SqliteDatabase(tmp_path / "aifr.db")
    ledger = open_sqlite_ledger(database)
    yield ledger
    ledger.close()
    database.close()


def _fill(ledger: AuditLedger, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        ledger.append(AuditEvent(kind="execution", principal="alice", details={"n": n}))


def test_records_wait_while_the_collector_is_down_and_arrive_in_order_once_it_is_up(
    ledger: AuditLedger,
) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/audit"
    _fill(ledger, 25)

    async def attempt() -> int:
        outbox = Outbox(ledger, HttpSink(url, timeout_s=5), batch_size=10)
        try:
            return await outbox.ship_once()
        finally:
            await outbox.sink.aclose()

    with pytest.raises(AifrError) as caught:
        asyncio.run(attempt())
    assert caught.value.code == ErrorCode.AUDIT_SINK_UNAVAILABLE
    assert ledger.store.shipped_seq(f"http:{url}") == 0
    collector = _Collector(port)
    try:
        assert asyncio.run(attempt()) == 25
        _fill(ledger, 5, start=25)
        assert asyncio.run(attempt()) == 5  # a new outbox (a restart) resumes at the cursor
        assert asyncio.run(attempt()) == 0
    finally:
        collector.stop()
    assert [line["seq"] for line in collector.lines] == list(range(1, 31))
    assert [line["details"]["n"] for line in collector.lines] == list(range(30))


def test_a_collector_answering_errors_keeps_the_cursor_until_it_accepts(
    ledger: AuditLedger,
) -> None:
    port = _free_port()
    collector = _Collector(port, status=503)
    _fill(ledger, 3)
    sink = HttpSink(f"http://127.0.0.1:{port}/", name="collector")
    outbox = Outbox(ledger, sink)
    try:
        with pytest.raises(AifrError) as caught:
            asyncio.run(outbox.ship_once())
        assert caught.value.code == ErrorCode.AUDIT_SINK_UNAVAILABLE
        assert outbox.backlog() == 3
        collector.status = 200
        assert asyncio.run(outbox.ship_once()) == 3
        assert outbox.backlog() == 0 and outbox.cursor() == 3
    finally:
        asyncio.run(sink.aclose())
        collector.stop()
    assert [line["seq"] for line in collector.lines] == [1, 2, 3]


def test_the_shipping_loop_retries_until_the_collector_comes_up(ledger: AuditLedger) -> None:
    port = _free_port()
    _fill(ledger, 12)
    collector: _Collector | None = None

    async def main() -> int:
        nonlocal collector
        stop = asyncio.Event()
        outbox = Outbox(
            ledger, HttpSink(f"http://127.0.0.1:{port}/"), retry_initial_s=0.02, retry_max_s=0.05
        )
        task = asyncio.create_task(outbox.run(stop, poll_s=0.02))
        await asyncio.sleep(0.1)  # let the loop fail against the closed port a few times
        collector = _Collector(port)
        async with asyncio.timeout(20):
            while len(collector.lines) < 12:
                await asyncio.sleep(0.01)
        stop.set()
        shipped = await task
        await outbox.sink.aclose()
        return shipped

    try:
        assert asyncio.run(main()) == 12
    finally:
        if collector is not None:
            collector.stop()
    assert collector is not None and [line["seq"] for line in collector.lines] == list(range(1, 13))


def test_sink_urls_pick_nats_or_http_and_anything_else_is_refused() -> None:
    assert isinstance(sink_from_url("nats://127.0.0.1:4222/AUDIT"), NatsSink)
    assert isinstance(sink_from_url("https://collector.example/audit"), HttpSink)
    with pytest.raises(AifrError) as caught:
        sink_from_url("ftp://x")
    assert caught.value.code == ErrorCode.CONFIG_INVALID  # the user's setting: bad input


@pytest.mark.parametrize(
    "url", ["http://alice:pw@[::1", "http://127.0.0.1:99999/audit", "https:///audit"]
)
def test_an_http_sink_url_no_request_can_use_is_refused_as_bad_input(url: str) -> None:
    with pytest.raises(AifrError) as caught:
        sink_from_url(url)
    assert caught.value.code == ErrorCode.CONFIG_INVALID
    assert "pw" not in caught.value.message


def _nats_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _nats_reachable(), reason="no NATS server with JetStream at 127.0.0.1:4222")
def test_nats_jetstream_receives_every_record_once_in_order_across_an_outage(
    ledger: AuditLedger,
) -> None:
    tag = uuid.uuid4().hex[:10]
    stream, prefix = f"AIFR_TEST_{tag}", f"aifrtest.{tag}"
    _fill(ledger, 15)

    async def main() -> list[dict]:  # type: ignore[type-arg]
        down = Outbox(
            ledger,
            NatsSink(
                f"nats://127.0.0.1:{_free_port()}",
                stream=stream,
                subject_prefix=prefix,
                name="nats",
                timeout_s=1,
            ),
        )
        with pytest.raises(AifrError) as caught:
            await down.ship_once()
        assert caught.value.code == ErrorCode.AUDIT_SINK_UNAVAILABLE
        assert down.cursor() == 0
        sink = NatsSink(NATS_URL, stream=stream, subject_prefix=prefix, name="nats")
        up = Outbox(ledger, sink, batch_size=4)
        try:
            assert await up.ship_once() == 15
            # A crash between the ack and the cursor offers a batch again: JetStream drops it.
            await sink.send(list(ledger.records(after_seq=10)))
            js = await sink._jetstream()
            info = await js.stream_info(stream)
            assert info.state.messages == 15
            messages = [await js.get_msg(stream, seq) for seq in range(1, 16)]
            await js.delete_stream(stream)
        finally:
            await sink.aclose()
        return [
            {
                "body": json.loads(m.data or b""),
                "id": (m.headers or {}).get("Nats-Msg-Id"),
                "subject": m.subject,
            }
            for m in messages
        ]

    received = asyncio.run(main())
    assert [m["body"]["seq"] for m in received] == list(range(1, 16))
    assert all(m["id"] == m["body"]["id"] for m in received)
    assert {m["subject"] for m in received} == {f"{prefix}.execution"}


def test_aifr_audit_ship_delivers_pending_records_and_needs_a_sink(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    init_project(tmp_path)
    ledger = build_audit_ledger(load_settings(tmp_path))
    _fill(ledger, 4)
    ledger.close()
    runner = CliRunner()
    missing = runner.invoke(app, ["audit", "ship", "--project", str(tmp_path)])
    assert missing.exit_code == 2 and "sink" in missing.stderr
    port = _free_port()
    collector = _Collector(port)
    try:
        url = f"http://127.0.0.1:{port}/audit"
        shipped = runner.invoke(app, ["audit", "ship", "--sink", url, "--project", str(tmp_path)])
        assert shipped.exit_code == 0, shipped.output
        assert "shipped 4 records" in shipped.stdout
        again = runner.invoke(app, ["audit", "ship", "--sink", url, "--project", str(tmp_path)])
        assert "shipped 0 records" in again.stdout
    finally:
        collector.stop()
    assert [line["seq"] for line in collector.lines] == [1, 2, 3, 4]


def test_credentials_in_a_sink_url_reach_no_output_error_or_cursor_key(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    init_project(tmp_path)
    ledger = build_audit_ledger(load_settings(tmp_path))
    _fill(ledger, 3)
    runner = CliRunner()
    port = _free_port()
    collector = _Collector(port)
    try:
        url = f"http://alice:s3cr3t-pw@127.0.0.1:{port}/audit?token=t0k3n-val&tenant=ops"
        shipped = runner.invoke(app, ["audit", "ship", "--sink", url, "--project", str(tmp_path)])
        assert shipped.exit_code == 0, shipped.output
        assert f"127.0.0.1:{port}/audit" in shipped.stdout
    finally:
        collector.stop()
    down = runner.invoke(
        app,
        [
            "audit",
            "ship",
            "--sink",
            f"nats://alice:s3cr3t-pw@127.0.0.1:{_free_port()}",
            "--project",
            str(tmp_path),
        ],
    )
    assert down.exit_code != 0
    cursor_keys = [
        row[0]
        for row in SqliteDatabase(tmp_path / ".aifr" / "aifr.db")
        .connect()
        .execute("SELECT sink FROM audit_outbox_cursors")
    ]
    ledger.close()
    assert [line["seq"] for line in collector.lines] == [1, 2, 3]
    for text in (shipped.output, down.output, *cursor_keys):
        assert "s3cr3t-pw" not in text
        assert "t0k3n-val" not in text


# -- the witness: checkpoints shipped with the records -------------------------------------


def _cut_and_rewrite(project: Path, keep: int, forged: int) -> None:
    """What an attacker with the database does: cut the tail, drop the local checkpoints,
    and append new records so the ledger again looks whole and current."""
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


def _witness_project(tmp_path: Path, records: int) -> Path:
    init_project(tmp_path)
    with (tmp_path / "aifr.toml").open("a", encoding="utf-8") as config:
        config.write("\n[audit]\ncheckpoint_every_records = 5\n")
    ledger = build_audit_ledger(load_settings(tmp_path))
    _fill(ledger, records)
    ledger.close()
    return tmp_path


def test_shipping_to_http_signs_checkpoints_that_catch_a_cut_and_rewritten_ledger(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = _witness_project(tmp_path, 12)
    port = _free_port()
    collector = _Collector(port)
    runner = CliRunner()
    try:
        url = f"http://127.0.0.1:{port}/audit"
        shipped = runner.invoke(app, ["audit", "ship", "--sink", url, "--project", str(project)])
        assert shipped.exit_code == 0, shipped.output
    finally:
        collector.stop()
    assert [line["seq"] for line in collector.lines] == list(range(1, 13))
    assert [c["seq"] for c in collector.checkpoints] == [5, 10, 12]  # every 5, and the end
    assert collector.checkpoints[-1]["hash"] == collector.lines[-1]["hash"]
    _cut_and_rewrite(project, keep=8, forged=6)
    local = runner.invoke(app, ["audit", "verify", "--json", "--project", str(project)])
    assert local.exit_code == 0  # the ledger alone no longer shows it
    witness_copy = tmp_path / "sink-checkpoint.json"
    witness_copy.write_text(json.dumps(collector.checkpoints[-1]), encoding="utf-8")
    held = runner.invoke(
        app,
        ["audit", "verify", "--json", "--checkpoint", str(witness_copy), "--project", str(project)],
    )
    assert held.exit_code == 1
    report = json.loads(held.stdout)
    assert report["ok"] is False
    assert (report["first_bad_seq"], report["problem"]) == (12, "checkpoint_mismatch")
    assert report["checkpoint_seq"] == 12
    cut = runner.invoke(app, ["audit", "verify", "--json", "--project", str(project)])
    assert cut.exit_code == 0
    _cut_and_rewrite(project, keep=8, forged=0)
    truncated = runner.invoke(
        app,
        ["audit", "verify", "--json", "--checkpoint", str(witness_copy), "--project", str(project)],
    )
    report = json.loads(truncated.stdout)
    assert (report["first_bad_seq"], report["problem"]) == (9, "truncated")
    assert "records 9..12 were removed" in report["message"]


@pytest.mark.skipif(not _nats_reachable(), reason="no NATS server with JetStream at 127.0.0.1:4222")
def test_the_nats_stream_keeps_the_witness_checkpoint_verify_holds_a_cut_ledger_to(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    project = _witness_project(tmp_path, 7)
    settings = load_settings(project)
    tag = uuid.uuid4().hex[:10]
    stream, prefix = f"AIFR_TEST_{tag}", f"aifrtest.{tag}"

    async def ship() -> dict:  # type: ignore[type-arg]
        ledger = build_audit_ledger(settings)
        sink = NatsSink(NATS_URL, stream=stream, subject_prefix=prefix)
        key = load_or_create_signing_key(settings.path(settings.audit.signing_key_file))
        outbox = Outbox(ledger, sink, witness=Witness(key, every_records=5))
        try:
            assert await outbox.ship_once() == 7
            await outbox.checkpoint_shipped()
            latest = await sink.latest_checkpoint()
            assert latest is not None
            js = await sink._jetstream()
            await js.delete_stream(stream)
        finally:
            await sink.aclose()
            ledger.close()
        return latest.to_dict()

    kept = asyncio.run(ship())
    assert kept["seq"] == 7
    _cut_and_rewrite(project, keep=4, forged=0)
    copy = tmp_path / "nats-checkpoint.json"
    copy.write_text(json.dumps(kept), encoding="utf-8")
    held = CliRunner().invoke(
        app, ["audit", "verify", "--json", "--checkpoint", str(copy), "--project", str(project)]
    )
    assert held.exit_code == 1
    report = json.loads(held.stdout)
    assert (report["first_bad_seq"], report["problem"]) == (5, "truncated")
    assert "records 5..7 were removed" in report["message"]


def test_a_quiet_ledger_still_gets_its_checkpoint_once_the_interval_passes(
    ledger: AuditLedger,
) -> None:
    port = _free_port()
    collector = _Collector(port)
    now = [1000.0]
    witness = Witness(
        Ed25519PrivateKey.generate(), every_records=100, every_s=60, clock=lambda: now[0]
    )
    _fill(ledger, 3)

    async def ship() -> int:
        outbox = Outbox(ledger, HttpSink(f"http://127.0.0.1:{port}/audit"), witness=witness)
        try:
            return await outbox.ship_once()
        finally:
            await outbox.sink.aclose()

    try:
        assert asyncio.run(ship()) == 3
        assert collector.checkpoints == []  # 3 of 100 records, and no time has passed
        now[0] += 61
        assert asyncio.run(ship()) == 0  # nothing new to ship, but the interval passed
        assert [c["seq"] for c in collector.checkpoints] == [3]
        now[0] += 61
        asyncio.run(ship())
        assert len(collector.checkpoints) == 1  # nothing shipped since: no new checkpoint
    finally:
        collector.stop()
    assert [c.seq for c in ledger.checkpoints()] == [3]
