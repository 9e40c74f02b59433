"""PostgreSQL's server-side append (``aifr_audit_append``) hashes exactly as ``chain_hash``.

The function computes seq, id, time and hash on the server, so a worker's step needs no
round trip under the chain's lock. Its hash must be the ledger's, byte for byte: these
tests append events with awkward text (non-ASCII, quotes, backslashes, control
characters, astral-plane characters) through the function, recompute every hash with
:func:`aifr.audit.record.chain_hash`, and verify the chain with the ledger, also mixed
with records the client chained itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aifr.audit import AuditEvent, AuditLedger
from aifr.audit.record import GENESIS_HASH, chain_hash
from aifr.storage.postgres.audit import (
    APPEND_CALL,
    AUDIT_SCHEMA_VERSION,
    PostgresAuditStore,
    append_fields,
    appended_records,
    text_array,
)

pytestmark = pytest.mark.pg

AWKWARD = [
    "plain",
    "naïve café — 東京 🚀",
    'quote " and backslash \\ and slash /',
    "control \n\t\r\x01\x1f and \u2028 \u2029",  # no NUL: PostgreSQL text refuses it
    "\ud7ff\ue000\U0010ffff",
]


@pytest.fixture
def ledger(pg_schema: tuple[str, str]) -> Iterator[AuditLedger]:
    dsn, schema = pg_schema
    ledger = AuditLedger(PostgresAuditStore(dsn, schema=schema))
    yield ledger
    ledger.close()


def _server_append(ledger: AuditLedger, conn: psycopg.Connection, events: list[AuditEvent]) -> None:
    prepared = [ledger.prepare(event) for event in events]
    with conn.transaction():
        rows = conn.execute(APPEND_CALL, (append_fields(prepared),)).fetchall()
    records = appended_records(prepared, rows)
    for (_, event_json, _), record in zip(prepared, records, strict=True):
        assert record.hash == chain_hash(
            event_json,
            seq=record.seq,
            record_id=record.id,
            ts=record.ts,
            prev_hash=record.prev_hash,
        )


def _connect(pg_schema: tuple[str, str]) -> psycopg.Connection:
    dsn, schema = pg_schema
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(psycopg.sql.Identifier(schema)))
    return conn


def test_the_server_hash_is_chain_hash_for_awkward_text_and_the_chain_verifies(
    ledger: AuditLedger, pg_schema: tuple[str, str]
) -> None:
    events = [
        AuditEvent(
            kind="invocation",
            principal=text,
            capability_id=text,
            outcome="ok",
            details={"text": text, text: [1, 2.5, None, True, {"nested": text}]},
        )
        for text in AWKWARD
    ]
    with _connect(pg_schema) as conn:
        _server_append(ledger, conn, events[:1])  # from genesis
        ledger.append(AuditEvent(kind="client", principal="agent"))  # chained by the client
        _server_append(ledger, conn, events[1:])  # a batch, each linked to the one before
    records = list(ledger.records())
    assert [r.seq for r in records] == list(range(1, len(AWKWARD) + 2))
    assert records[0].prev_hash == GENESIS_HASH
    assert [r.event.principal for r in records] == [AWKWARD[0], "agent", *AWKWARD[1:]]
    assert records[2].event.details["text"] == AWKWARD[1]  # stored text read back unchanged
    assert ledger.verify().ok


text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(text, text, st.dictionaries(text, text | st.integers())), max_size=4))
def test_any_unicode_event_hashes_the_same_on_the_server(
    ledger: AuditLedger, pg_schema: tuple[str, str], batch: list[tuple[str, str, dict]]
) -> None:
    events = [
        AuditEvent(kind="k" + kind, principal="p" + principal, details=details)
        for kind, principal, details in batch
    ]
    if not events:
        return
    with _connect(pg_schema) as conn:
        _server_append(ledger, conn, events)
    assert ledger.verify().ok


def test_an_id_that_would_need_json_escapes_is_refused(
    ledger: AuditLedger, pg_schema: tuple[str, str]
) -> None:
    event = AuditEvent(kind="k", principal="p")
    _, event_json, details_json = ledger.prepare(event)
    # the id's random part: never made so by the client
    fields = text_array(['not"hex', event_json, "k", "p", *[None] * 9, details_json])
    with _connect(pg_schema) as conn, pytest.raises(psycopg.Error) as raised:
        conn.execute(APPEND_CALL, (fields,))
    assert raised.value.sqlstate == "AF002"
    assert list(ledger.records()) == []


def test_an_array_literal_reads_back_as_the_texts_it_was_built_from(
    pg_schema: tuple[str, str],
) -> None:
    texts = [*AWKWARD, None, "", "NULL", "{a,b}", ' "x" ', "\\\\", "tab\tend"]
    with _connect(pg_schema) as conn:
        (back,) = conn.execute("SELECT %s::text[]", (text_array(texts),)).fetchone()  # type: ignore[misc]
    assert back == texts


def test_an_audit_schema_at_version_2_is_upgraded_in_place(pg_schema: tuple[str, str]) -> None:
    # Version 3 added aifr_step_ends_run (a run's last step and its end in one statement),
    # version 4 a batch's tail writing its steps' rows, version 5 the same tail locking
    # them under their fences (aifr_audit_append_fenced_steps); a database a version-2
    # aifr made gets them, and its records stay, at the next start.
    dsn, schema = pg_schema
    ledger = AuditLedger(PostgresAuditStore(dsn, schema=schema))
    ledger.append(AuditEvent(kind="before", principal="agent"))
    ledger.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute("DROP FUNCTION aifr_step_ends_run")
        conn.execute("DROP FUNCTION aifr_audit_append_fenced_steps")
        conn.execute("UPDATE schema_versions SET version = 2 WHERE component = 'audit'")
    ledger = AuditLedger(PostgresAuditStore(dsn, schema=schema))
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            assert conn.execute(
                "SELECT version FROM schema_versions WHERE component = 'audit'"
            ).fetchone() == (AUDIT_SCHEMA_VERSION,)
            assert conn.execute("SELECT to_regproc('aifr_step_ends_run')").fetchone() != (None,)
            assert conn.execute(
                "SELECT to_regproc('aifr_audit_append_fenced_steps')"
            ).fetchone() != (None,)
        assert [r.event.kind for r in ledger.records()] == ["before"]
        assert ledger.verify().ok
    finally:
        ledger.close()
