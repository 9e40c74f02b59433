"""The TokenStore contract, run against every adapter (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from aifr.invocation import TokenRecord, TokenService, TokenStore, TokenUse, token_digest
from aifr.storage.postgres.tokens import PostgresTokenStore
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.tokens import SqliteTokenStore

MakeStore = Callable[..., TokenStore]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.pg)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    """A factory: every store it makes shares one database, as several processes would."""
    if request.param == "postgres":
        database, _ = request.getfixturevalue("pg_state")
        return lambda legacy=None: PostgresTokenStore(database, legacy_file=legacy)
    path = tmp_path / "aifr.db"
    return lambda legacy=None: SqliteTokenStore(SqliteDatabase(path), legacy_file=legacy)


def test_a_token_minted_in_one_process_verifies_in_another(make_store: MakeStore) -> None:
    server: TokenStore = make_store()
    token, record = TokenService(make_store()).create("agent-7", roles=["ops"], operator="al")
    found = TokenService(server).verify(token)
    assert found is not None
    assert (found.principal, found.roles, found.operator) == ("agent-7", ("ops",), "al")
    assert server.get(token_digest(token)) == record
    assert TokenService(server).verify(token + "x") is None


def test_a_revoked_token_is_refused_everywhere_and_keeps_its_first_revocation(
    make_store: MakeStore,
) -> None:
    tokens = TokenService(make_store())
    token, record = tokens.create("agent")
    store: TokenStore = make_store()
    store.revoke(record.digest, 100.0)
    store.revoke(record.digest, 200.0)
    revoked = store.get(record.digest)
    assert revoked is not None and revoked.revoked_at == 100.0
    assert tokens.check(token) == TokenUse("revoked")


def test_records_list_oldest_first(make_store: MakeStore) -> None:
    store: TokenStore = make_store()
    for n, at in (("b", 20.0), ("a", 10.0)):
        store.add(
            TokenRecord(
                digest=n * 64, principal=n, roles=(), operator=None, label="", created_at=at
            )
        )
    assert [r.principal for r in store.list()] == ["a", "b"]


def test_a_legacy_token_file_is_imported_once_and_renamed(
    make_store: MakeStore, tmp_path: Path
) -> None:
    legacy = tmp_path / "tokens.json"
    digest = "d" * 64
    legacy.write_text(json.dumps({"tokens": {digest: {"principal": "old", "roles": ["r"]}}}))
    store: TokenStore = make_store(legacy)
    found = store.get(digest)
    assert found is not None and (found.principal, found.roles) == ("old", ("r",))
    assert not legacy.exists()
    assert (tmp_path / "tokens.json.migrated").exists()
