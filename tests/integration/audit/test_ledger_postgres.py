"""The ledger on the real PostgreSQL server: many processes, caller transactions."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from aifr.app import build_audit_ledger
from aifr.audit import AuditEvent, AuditLedger
from aifr.cli.main import app
from aifr.config import init_project, load_settings
from aifr.errors import ErrorCode
from aifr.storage.postgres.audit import open_postgres_ledger

pytestmark = pytest.mark.pg

DSN = os.environ.get("AIFR_TEST_PG_DSN", "")


@pytest.fixture
def schema() -> Iterator[str]:
    if not DSN:
        pytest.skip("AIFR_TEST_PG_DSN is not set: the PostgreSQL adapter needs a server")
    name = f"aifr_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def ledger(schema: str) -> Iterator[AuditLedger]:
    ledger = open_postgres_ledger(DSN, schema=schema)
    yield ledger
    ledger.close()


_CHILD = """
import sys, threading
from aifr.audit import AuditEvent
from aifr.storage.postgres.audit import open_postgres_ledger
ledger = open_postgres_ledger(sys.argv[1], schema=sys.argv[2])
def work():
    for n in range(80):
        ledger.append(AuditEvent(kind="execution", principal=sys.argv[3], details={"n": n}))
threads = [threading.Thread(target=work) for _ in range(3)]
[t.start() for t in threads]
[t.join() for t in threads]
ledger.close()
"""


def test_two_worker_processes_and_this_one_extend_one_chain(
    ledger: AuditLedger, schema: str
) -> None:
    children = [
        subprocess.Popen([sys.executable, "-c", _CHILD, DSN, schema, name])
        for name in ("worker-a", "worker-b")
    ]
    for n in range(80):
        ledger.append(AuditEvent(kind="execution", principal="parent", details={"n": n}))
    assert [child.wait(120) for child in children] == [0, 0]
    report = ledger.verify()
    assert report.ok and report.checked == 560
    assert sum(1 for _ in ledger.records(principal="worker-b")) == 240


def test_append_in_commits_with_the_callers_transaction_or_not_at_all(
    ledger: AuditLedger, schema: str
) -> None:
    first = ledger.append(AuditEvent(kind="execution", principal="a"))
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        with conn.transaction():
            kept = ledger.append_in(conn, AuditEvent(kind="approval.granted", principal="b"))
        with pytest.raises(RuntimeError), conn.transaction():
            ledger.append_in(conn, AuditEvent(kind="approval.granted", principal="c"))
            raise RuntimeError("the caller fails after appending")
        with pytest.raises(Exception) as caught:
            ledger.append_in(conn, AuditEvent(kind="x", principal="d"))
        assert caught.value.code == ErrorCode.AUDIT_FAILED  # type: ignore[attr-defined]
    assert kept.prev_hash == first.hash
    assert [r.event.principal for r in ledger.records()] == ["a", "b"]
    assert ledger.verify().ok


def test_a_postgresql_database_url_puts_the_ledger_in_postgresql_for_the_cli(
    schema: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    separator = "&" if "?" in DSN else "?"
    url = f"{DSN}{separator}options=-csearch_path%3D{schema}"
    init_project(tmp_path)
    ledger = build_audit_ledger(load_settings(tmp_path).model_copy(update={"database_url": url}))
    ledger.append(AuditEvent(kind="config.changed", principal="ops"))
    ledger.close()
    result = CliRunner().invoke(
        app, ["audit", "verify", "--project", str(tmp_path)], env={"AIFR_DATABASE_URL": url}
    )
    assert result.exit_code == 0, result.output
    assert "1 records, chain intact" in result.stdout
