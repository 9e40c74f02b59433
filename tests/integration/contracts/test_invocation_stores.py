"""Contract of the invocation ports (approvals, idempotency, circuits) for every adapter.

Each runs against SQLite and PostgreSQL (``AIFR_TEST_PG_DSN``, a fresh schema per test).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aifr.audit import AuditEvent, AuditLedger
from aifr.errors import ApprovalError, ErrorCode
from aifr.invocation import (
    ApprovalRecord,
    ApprovalStatus,
    ApprovalStore,
    CircuitRecord,
    CircuitStore,
    IdempotencyStore,
)
from aifr.storage.postgres.approvals import PostgresApprovalStore
from aifr.storage.postgres.circuits import PostgresCircuitStore
from aifr.storage.postgres.idempotency import PostgresIdempotencyStore
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.approvals import SqliteApprovalStore
from aifr.storage.sqlite.audit import SqliteAuditStore
from aifr.storage.sqlite.circuits import SqliteCircuitStore
from aifr.storage.sqlite.idempotency import SqliteIdempotencyStore


@dataclass
class Stores:
    approvals: ApprovalStore
    idempotency: IdempotencyStore
    circuits: CircuitStore
    ledger: AuditLedger

    def audit_kinds(self) -> list[str]:
        return [record.event.kind for record in self.ledger.records()]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.pg)])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "postgres":
        pg, pg_ledger = request.getfixturevalue("pg_state")
        yield Stores(
            PostgresApprovalStore(pg, pg_ledger),
            PostgresIdempotencyStore(pg, pg_ledger),
            PostgresCircuitStore(pg),
            pg_ledger,
        )
        return
    database = SqliteDatabase(tmp_path / "state.db", synchronous="NORMAL")
    ledger = AuditLedger(SqliteAuditStore(database))
    yield Stores(
        SqliteApprovalStore(database, ledger),
        SqliteIdempotencyStore(database, ledger),
        SqliteCircuitStore(database),
        ledger,
    )
    database.close()


def event(kind: str) -> AuditEvent:
    return AuditEvent(kind=kind, principal="tester", capability_id="demo.x", outcome="ok")


def approval(
    approval_id: str = "ap-1", *, digest: str = "d1", created_at: float = 100.0
) -> ApprovalRecord:
    return ApprovalRecord(
        id=approval_id,
        capability_id="demo.x",
        capability_version="1",
        fingerprint="f" * 64,
        principal="alice",
        roles=("dev",),
        inputs={"path": "secret://TOKEN", "n": [1, 2]},
        request_digest=digest,
        risk="HIGH",
        rule_id="r1",
        reason="because",
        approver_roles=("approver",),
        quorum=2,
        created_at=created_at,
        expires_at=created_at + 60,
        on_behalf_of=("carol",),
    )


def test_an_approval_round_trips_with_its_audit_record(stores: Stores) -> None:
    record = approval()
    audited = stores.approvals.create(record, event("invocation"))
    assert audited.event.kind == "invocation"
    assert stores.approvals.get("ap-1") == record
    assert stores.approvals.get("ap-missing") is None


def test_find_open_returns_only_a_pending_unexpired_request_for_the_digest(stores: Stores) -> None:
    stores.approvals.create(approval("ap-1", digest="d1"), event("a"))
    stores.approvals.create(approval("ap-2", digest="d2"), event("b"))
    assert stores.approvals.find_open("d1", now=120.0).id == "ap-1"  # type: ignore[union-attr]
    assert stores.approvals.find_open("d1", now=161.0) is None
    assert stores.approvals.find_open("d3", now=120.0) is None


def test_list_is_newest_first_and_filters_by_status(stores: Stores) -> None:
    for n in range(3):
        stores.approvals.create(approval(f"ap-{n}", created_at=100.0 + n), event("a"))
    stores.approvals.update(
        "ap-1", lambda r: (r.evolve(status=ApprovalStatus.REJECTED), event("approval.rejected"))
    )
    assert [r.id for r in stores.approvals.list()] == ["ap-2", "ap-1", "ap-0"]
    assert [r.id for r in stores.approvals.list(status=ApprovalStatus.PENDING)] == ["ap-2", "ap-0"]
    assert [r.id for r in stores.approvals.list(limit=1)] == ["ap-2"]


def test_an_update_writes_the_change_and_its_audit_record_together(stores: Stores) -> None:
    stores.approvals.create(approval(), event("invocation"))
    updated, audited = stores.approvals.update(
        "ap-1", lambda r: (r.evolve(status=ApprovalStatus.APPROVED), event("approval.approved"))
    )
    assert updated.status is ApprovalStatus.APPROVED and audited is not None
    assert stores.approvals.get("ap-1").status is ApprovalStatus.APPROVED  # type: ignore[union-attr]
    assert stores.audit_kinds() == ["invocation", "approval.approved"]


def test_an_update_that_raises_writes_nothing(stores: Stores) -> None:
    stores.approvals.create(approval(), event("invocation"))

    def refuse(record: ApprovalRecord) -> tuple[ApprovalRecord, AuditEvent | None]:
        raise ApprovalError("no", code=ErrorCode.APPROVAL_EXPIRED)

    with pytest.raises(ApprovalError):
        stores.approvals.update("ap-1", refuse)
    assert stores.approvals.get("ap-1").status is ApprovalStatus.PENDING  # type: ignore[union-attr]
    assert stores.audit_kinds() == ["invocation"]


def test_updating_an_unknown_request_is_not_found(stores: Stores) -> None:
    with pytest.raises(ApprovalError) as caught:
        stores.approvals.update("ap-nope", lambda r: (r, None))
    assert caught.value.code is ErrorCode.APPROVAL_NOT_FOUND


def test_concurrent_check_then_set_updates_serialize(stores: Stores) -> None:
    stores.approvals.create(approval(), event("invocation"))
    barrier = threading.Barrier(6)
    winners: list[int] = []

    def consume(n: int) -> None:
        def change(record: ApprovalRecord) -> tuple[ApprovalRecord, AuditEvent | None]:
            if record.status is not ApprovalStatus.PENDING:
                raise ApprovalError("taken", code=ErrorCode.APPROVAL_CONSUMED)
            return record.evolve(status=ApprovalStatus.CONSUMED), None

        barrier.wait(5)
        try:
            stores.approvals.update("ap-1", change)
        except ApprovalError:
            return
        winners.append(n)

    threads = [threading.Thread(target=consume, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(winners) == 1


def test_idempotency_claim_is_first_come_and_scoped_per_principal(stores: Stores) -> None:
    assert stores.idempotency.claim("alice", "k", "d", 1.0) is None
    taken = stores.idempotency.claim("alice", "k", "other", 2.0)
    assert taken is not None and taken.request_digest == "d" and not taken.is_complete
    assert stores.idempotency.claim("bob", "k", "d", 3.0) is None
    assert stores.idempotency.get("carol", "k") is None


def test_completing_a_key_stores_the_result_with_its_audit_record(stores: Stores) -> None:
    stores.idempotency.claim("alice", "k", "d", 1.0)
    audited = stores.idempotency.complete("alice", "k", {"status": "ok"}, 2.0, event("invocation"))
    assert audited.event.kind == "invocation"
    record = stores.idempotency.get("alice", "k")
    assert record is not None and record.result == {"status": "ok"} and record.completed_at == 2.0
    stores.idempotency.release("alice", "k")
    assert stores.idempotency.get("alice", "k") is not None


def test_releasing_an_unfinished_claim_frees_the_key(stores: Stores) -> None:
    stores.idempotency.claim("alice", "k", "d", 1.0)
    stores.idempotency.release("alice", "k")
    assert stores.idempotency.get("alice", "k") is None
    assert stores.idempotency.claim("alice", "k", "d2", 2.0) is None


def test_circuit_states_are_upserted_and_loaded(stores: Stores) -> None:
    stores.circuits.save(CircuitRecord("b.cap", "open", 5, 10.0, 11.0))
    stores.circuits.save(CircuitRecord("a.cap", "closed", 0, None, 12.0))
    stores.circuits.save(CircuitRecord("b.cap", "closed", 0, None, 13.0))
    assert stores.circuits.load() == [
        CircuitRecord("a.cap", "closed", 0, None, 12.0),
        CircuitRecord("b.cap", "closed", 0, None, 13.0),
    ]
