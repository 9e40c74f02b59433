"""``aifr audit``: tampering of every kind is named by ``verify``; tail, export, checkpoint."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from aifr.app import build_audit_ledger
from aifr.audit import GENESIS_HASH, AuditEvent
from aifr.audit.record import chain_hash, encode_details, encode_event
from aifr.cli.main import app
from aifr.config import init_project, load_settings

_INSERT = (
    "INSERT INTO audit_records (seq, id, ts, kind, principal, capability_id, outcome, details, "
    "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@pytest.fixture
def project(tmp_path: Path, clean_env: dict[str, str]) -> Iterator[Path]:
    init_project(tmp_path)
    ledger = build_audit_ledger(load_settings(tmp_path))
    for n in range(1, 13):
        ledger.append(
            AuditEvent(
                kind="execution" if n % 3 else "approval.granted",
                principal=("alice", "bob", "carol")[n % 3],
                capability_id="io.fs.read_file",
                decision="ALLOW",
                outcome="ok" if n != 7 else "execution.failed",
                details={"n": n},
            )
        )
    ledger.close()
    yield tmp_path


def _aifr(project: Path, *args: str) -> Result:
    """Run ``aifr ARGS --project PROJECT`` in-process (the same Typer app the script runs)."""
    return CliRunner().invoke(app, [*args, "--project", str(project)], env={"COLUMNS": "40"})


@contextlib.contextmanager
def _db(project: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(project / ".aifr" / "aifr.db", isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _verify(project: Path) -> dict:  # type: ignore[type-arg]
    result = _aifr(project, "audit", "verify", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == (0 if report["ok"] else 1), result.output
    return report


def _swap_rows(conn: sqlite3.Connection, a: int, b: int) -> None:
    conn.execute("BEGIN")
    conn.execute("UPDATE audit_records SET seq = -1 WHERE seq = ?", (a,))
    conn.execute("UPDATE audit_records SET seq = ? WHERE seq = ?", (a, b))
    conn.execute("UPDATE audit_records SET seq = ? WHERE seq = -1", (b,))
    conn.execute("COMMIT")


def test_an_untouched_ledger_verifies_with_exit_0(project: Path) -> None:
    result = _aifr(project, "audit", "verify")
    assert result.exit_code == 0, result.stderr
    assert "12 records, chain intact" in result.stdout


def test_an_edited_field_is_named_with_its_seq_and_exit_1(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    with _db(project) as conn:
        conn.execute("UPDATE audit_records SET outcome = 'ok' WHERE seq = 7")
    result = subprocess.run(
        [aifr_bin, "audit", "verify", "--project", str(project)],
        capture_output=True,
        text=True,
        env=clean_env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "record 7" in result.stderr and "hash_mismatch" in result.stderr
    assert _verify(project)["first_bad_seq"] == 7


def test_a_deleted_row_is_reported_missing(project: Path) -> None:
    with _db(project) as conn:
        conn.execute("DELETE FROM audit_records WHERE seq = 5")
    report = _verify(project)
    assert (report["first_bad_seq"], report["problem"]) == (5, "missing")


def test_two_swapped_rows_are_reported_reordered(project: Path) -> None:
    with _db(project) as conn:
        _swap_rows(conn, 4, 5)
    report = _verify(project)
    assert (report["first_bad_seq"], report["problem"]) == (4, "reordered")


def test_a_forged_row_inserted_in_the_middle_is_reported_inserted(project: Path) -> None:
    with _db(project) as conn:
        _insert_forged_row(conn)
    report = _verify(project)
    assert (report["first_bad_seq"], report["problem"]) == (6, "inserted")


def _insert_forged_row(conn: sqlite3.Connection) -> None:
    prev_hash = conn.execute("SELECT hash FROM audit_records WHERE seq = 5").fetchone()[0]
    forged = AuditEvent(
        kind="execution", principal="alice", capability_id="io.fs.delete", outcome="ok"
    )
    ts = "2026-01-01T00:00:00.000000Z"
    digest = chain_hash(
        encode_event(forged), seq=6, record_id="au-forged", ts=ts, prev_hash=prev_hash
    )
    conn.execute("BEGIN")
    conn.execute("UPDATE audit_records SET seq = seq + 1000 WHERE seq >= 6")
    conn.execute("UPDATE audit_records SET seq = seq - 999 WHERE seq >= 1006")
    conn.execute(
        _INSERT,
        (6, "au-forged", ts, "execution", "alice", "io.fs.delete", "ok", "{}", prev_hash, digest),
    )
    conn.execute("COMMIT")


def test_truncating_the_tail_after_a_checkpoint_is_reported(project: Path) -> None:
    result = _aifr(project, "audit", "checkpoint", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["seq"] == 12
    key = project / ".aifr" / "keys" / "audit-ed25519.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert _verify(project)["ok"]
    with _db(project) as conn:
        conn.execute("DELETE FROM audit_records WHERE seq >= 10")
        conn.execute("DELETE FROM audit_checkpoints")  # the file copy still holds it
    result = _aifr(project, "audit", "verify")
    assert result.exit_code == 1
    assert "record 10" in result.stderr and "truncated" in result.stderr


def test_a_ledger_rewritten_from_scratch_contradicts_a_kept_checkpoint(project: Path) -> None:
    assert _aifr(project, "audit", "checkpoint").exit_code == 0
    saved = project / "elsewhere.json"
    saved.write_text((project / ".aifr" / "audit-checkpoint.json").read_text())
    (project / ".aifr" / "audit-checkpoint.json").unlink()
    with _db(project) as conn:
        _rewrite_chain(conn)
    assert _verify(project)["ok"]  # a consistent forgery fools the chain...
    result = _aifr(project, "audit", "verify", "--checkpoint", str(saved), "--json")
    assert result.exit_code == 1  # ...but not a checkpoint kept elsewhere
    assert json.loads(result.stdout)["problem"] == "checkpoint_mismatch"


def test_a_details_column_respelled_to_an_equal_value_is_reported_modified(
    project: Path,
) -> None:
    with _db(project) as conn:
        conn.execute("UPDATE audit_records SET details = ' ' || details WHERE seq = 4")
        conn.execute("UPDATE audit_records SET details = '{\"n\": 9}' WHERE seq = 9")
    report = _verify(project)
    assert (report["first_bad_seq"], report["problem"]) == (4, "hash_mismatch")
    with _db(project) as conn:
        conn.execute("UPDATE audit_records SET details = '{\"n\":4}' WHERE seq = 4")
    report = _verify(project)
    assert (report["first_bad_seq"], report["problem"]) == (9, "hash_mismatch")


def test_a_checkpoint_kept_elsewhere_holds_after_the_signing_key_is_replaced(
    project: Path,
) -> None:
    assert _aifr(project, "audit", "checkpoint").exit_code == 0
    state = project / ".aifr"
    saved = project / "elsewhere.json"
    saved.write_text((state / "audit-checkpoint.json").read_text())
    with _db(project) as conn:  # truncate, then cover the tracks with a key of one's own
        conn.execute("DELETE FROM audit_records WHERE seq >= 10")
        conn.execute("DELETE FROM audit_checkpoints")
    (state / "audit-checkpoint.json").unlink()
    (state / "keys" / "audit-ed25519.pem").unlink()
    assert _aifr(project, "audit", "checkpoint").exit_code == 0
    assert _verify(project)["ok"]  # the project's own checkpoints are the attacker's now
    result = _aifr(project, "audit", "verify", "--checkpoint", str(saved), "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert (report["first_bad_seq"], report["problem"]) == (10, "truncated")


def _rewrite_chain(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM audit_checkpoints")
    conn.execute("DELETE FROM audit_records")
    prev = GENESIS_HASH
    for seq in range(1, 13):
        event = AuditEvent(kind="execution", principal="alice", details={"n": seq})
        digest = chain_hash(
            encode_event(event), seq=seq, record_id=f"au-{seq}", ts="t", prev_hash=prev
        )
        row = (seq, f"au-{seq}", "t", "execution", "alice", None, None, encode_details({"n": seq}))
        conn.execute(_INSERT, (*row, prev, digest))
        prev = digest


def test_tail_prints_the_newest_records_oldest_first(project: Path) -> None:
    result = _aifr(project, "audit", "tail", "-n", "3", "--json")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [10, 11, 12]
    table = _aifr(project, "audit", "tail", "-n", "2", "--principal", "alice")
    assert table.exit_code == 0 and table.stdout.count("alice") == 2 and "bob" not in table.stdout


def test_tail_follow_prints_records_appended_later(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    follower = subprocess.Popen(
        [
            aifr_bin,
            "audit",
            "tail",
            "-n",
            "1",
            "--follow",
            "--json",
            "--interval",
            "0.05",
            "--project",
            str(project),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env,
    )
    try:
        assert follower.stdout is not None
        assert json.loads(follower.stdout.readline())["seq"] == 12
        ledger = build_audit_ledger(load_settings(project))
        ledger.append(AuditEvent(kind="config.changed", principal="ops"))
        ledger.close()
        line = json.loads(follower.stdout.readline())
        assert (line["seq"], line["kind"]) == (13, "config.changed")
    finally:
        follower.terminate()
        follower.wait(10)
        if follower.stdout is not None:
            follower.stdout.close()


def test_export_writes_json_lines_filtered_by_principal_and_time(project: Path) -> None:
    every = _aifr(project, "audit", "export", "--format", "jsonl")
    lines = [json.loads(line) for line in every.stdout.splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, 13))
    assert {"hash", "prev_hash", "principal", "details", "ts"} <= set(lines[0])
    bob = _aifr(project, "audit", "export", "--principal", "bob")
    assert {json.loads(line)["principal"] for line in bob.stdout.splitlines()} == {"bob"}
    since, until = lines[3]["ts"], lines[8]["ts"]
    window = _aifr(
        project,
        "audit",
        "export",
        "--since",
        since,
        "--until",
        until,
        "-o",
        str(project / "out.jsonl"),
    )
    assert window.exit_code == 0, window.stderr
    picked = [json.loads(line) for line in (project / "out.jsonl").read_text().splitlines()]
    assert picked and all(since <= line["ts"] < until for line in picked)
    bad_time = _aifr(project, "audit", "export", "--since", "someday")
    assert bad_time.exit_code == 2  # bad input, not an audit failure
    assert "input.invalid" in bad_time.stderr


def test_export_refuses_an_unknown_format(project: Path) -> None:
    result = _aifr(project, "audit", "export", "--format", "xml")
    assert result.exit_code == 2
    assert "jsonl" in result.stderr


def test_export_to_a_path_that_cannot_be_written_is_an_error_not_a_traceback(
    project: Path,
) -> None:
    target = project / "no" / "such" / "x.jsonl"
    result = _aifr(project, "audit", "export", "-o", str(target))
    assert result.exit_code == 2, result.output
    assert "config.invalid" in result.stderr
    assert str(target) in result.stderr  # whole: never broken by wrapping, at any width


def test_export_to_a_full_disk_on_stdout_is_an_error_not_a_traceback(
    aifr_bin: str, project: Path, clean_env: dict[str, str]
) -> None:
    with Path("/dev/full").open("w") as full:
        result = subprocess.run(
            [aifr_bin, "audit", "export", "--project", str(project)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env,
            timeout=60,
            check=False,
        )
    assert result.returncode != 0
    assert "audit.failed" in result.stderr and "No space left" in result.stderr
    assert "Traceback" not in result.stderr
