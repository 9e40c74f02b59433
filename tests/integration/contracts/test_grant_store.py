"""The GrantStore contract, run against every adapter (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aifr.errors import ErrorCode, PolicyError
from aifr.policy import Grant, GrantStore, InMemoryGrantStore
from aifr.storage.postgres.grants import PostgresGrantStore
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.grants import SqliteGrantStore


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.pg)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> GrantStore:
    if request.param == "memory":
        return InMemoryGrantStore()
    if request.param == "postgres":
        database, _ = request.getfixturevalue("pg_state")
        return PostgresGrantStore(database)
    return SqliteGrantStore(SqliteDatabase(tmp_path / "aifr.db"))


def grant(grant_id: str, principal: str = "alice", **changes: object) -> Grant:
    values: dict[str, object] = {
        "id": grant_id,
        "principal": principal,
        "capability": "io.*",
        "issued_by": "erin",
        "issued_at": 100.0,
        "expires_at": 200.0,
        "constraints": {"path": {"under": "/srv"}, "mode": ["a", "b"]},
        "reason": "approved ticket 7",
    }
    values.update(changes)
    return Grant(**values)  # type: ignore[arg-type]


def test_a_stored_grant_reads_back_unchanged(store: GrantStore) -> None:
    store.add(grant("g-1"))
    assert store.get("g-1") == grant("g-1")
    assert store.get("g-2") is None


def test_grants_list_oldest_first_and_filter_by_principal_and_activity(store: GrantStore) -> None:
    store.add(grant("g-2", principal="bob", issued_at=110.0, expires_at=150.0))
    store.add(grant("g-1"))
    assert [g.id for g in store.list()] == ["g-1", "g-2"]
    assert [g.id for g in store.list(principal="bob")] == ["g-2"]
    assert [g.id for g in store.list(active_at=160.0)] == ["g-1"]
    assert [g.id for g in store.active_for("alice", 199.0)] == ["g-1"]
    assert list(store.active_for("alice", 200.0)) == []


def test_revoking_keeps_the_first_revocation_and_deactivates(store: GrantStore) -> None:
    store.add(grant("g-1"))
    revoked = store.revoke("g-1", revoked_by="erin", at=120.0)
    assert (revoked.revoked_by, revoked.revoked_at) == ("erin", 120.0)
    assert list(store.active_for("alice", 130.0)) == []
    assert store.revoke("g-1", revoked_by="root", at=130.0).revoked_by == "erin"
    assert store.list(active_at=None)[0].revoked_at == 120.0


def test_a_duplicate_grant_id_is_refused(store: GrantStore) -> None:
    store.add(grant("g-1"))
    with pytest.raises(PolicyError) as info:
        store.add(grant("g-1", principal="bob"))
    assert info.value.code is ErrorCode.POLICY_INVALID
    assert store.get("g-1") == grant("g-1")


def test_revoking_an_unknown_grant_names_it(store: GrantStore) -> None:
    with pytest.raises(PolicyError) as info:
        store.revoke("g-none", revoked_by="erin", at=1.0)
    assert info.value.code is ErrorCode.POLICY_GRANT_NOT_FOUND
    assert info.value.details["grant_id"] == "g-none"
