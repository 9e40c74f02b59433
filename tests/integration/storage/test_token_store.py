"""Bearer tokens in the state database: minted once, digests only, shared, expiring, revocable."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from aifr.errors import ConfigError, ErrorCode
from aifr.invocation import TokenRecord, TokenService, TokenUse, token_digest
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.tokens import SqliteTokenStore


def _service(path: Path, legacy: Path | None = None) -> TokenService:
    return TokenService(SqliteTokenStore(SqliteDatabase(path), legacy_file=legacy))


def test_created_token_verifies_to_its_principal_roles_and_operator(tmp_path: Path) -> None:
    tokens = _service(tmp_path / "state.db")
    token, record = tokens.create("agent-7", roles=["ops", "dev"], operator="alice", label="ci")
    found = tokens.verify(token)
    assert found is not None
    assert (found.principal, found.roles, found.operator) == ("agent-7", ("dev", "ops"), "alice")
    assert record.digest == token_digest(token)
    assert tokens.verify(token + "x") is None


def test_the_database_holds_only_the_digest_of_a_token(tmp_path: Path) -> None:
    token, _ = _service(tmp_path / "state.db").create("agent")
    rows = sqlite3.connect(tmp_path / "state.db").execute("SELECT * FROM tokens").fetchall()
    assert token not in repr(rows)
    assert token_digest(token) in repr(rows)


def test_a_token_minted_by_another_process_is_seen_by_a_running_server(tmp_path: Path) -> None:
    server_side = _service(tmp_path / "state.db")
    assert server_side.records() == []
    token, _ = _service(tmp_path / "state.db").create("late")
    assert server_side.verify(token) is not None


def test_a_token_past_its_expiry_is_refused_as_expired(tmp_path: Path) -> None:
    tokens = _service(tmp_path / "state.db")
    token, record = tokens.create("agent", ttl_s=60)
    assert isinstance(tokens.check(token), TokenRecord)
    assert record.expires_at is not None
    assert tokens.check(token, now=record.expires_at + 1) == TokenUse("expired")


def test_a_revoked_token_is_refused_in_every_process_and_listed_only_when_asked(
    tmp_path: Path,
) -> None:
    server_side = _service(tmp_path / "state.db")
    token, record = server_side.create("agent")
    _service(tmp_path / "state.db").revoke(record.digest[:10])
    assert server_side.check(token) == TokenUse("revoked")
    assert server_side.records() == []
    assert [r.digest for r in server_side.records(include_revoked=True)] == [record.digest]


def test_missing_and_unknown_tokens_say_so(tmp_path: Path) -> None:
    tokens = _service(tmp_path / "state.db")
    assert tokens.check(None) == TokenUse("missing")
    assert tokens.check("aifr_nothing") == TokenUse("unknown")
    assert tokens.check("aifr_nothing").error(hint="h").code is ErrorCode.TRANSPORT_UNAUTHENTICATED


def test_revoke_with_an_unknown_prefix_names_the_problem(tmp_path: Path) -> None:
    tokens = _service(tmp_path / "state.db")
    tokens.create("agent")
    with pytest.raises(ConfigError) as caught:
        tokens.revoke("zzzz")
    assert caught.value.code is ErrorCode.CONFIG_INVALID
    assert caught.value.details["field"] == "digest"


@pytest.mark.parametrize(
    ("principal", "operator", "ttl", "field"),
    [
        ("  ", None, None, "principal"),
        (" bob", None, None, "principal"),
        ("bob", "ali\nce", None, "operator"),
        ("bob", None, 0.0, "ttl"),
    ],
)
def test_a_token_needs_names_and_a_positive_lifetime(
    tmp_path: Path, principal: str, operator: str | None, ttl: float | None, field: str
) -> None:
    tokens = _service(tmp_path / "state.db")
    with pytest.raises(ConfigError) as refused:
        tokens.create(principal, operator=operator, ttl_s=ttl)
    assert refused.value.details["field"] == field
    assert tokens.records() == []


def test_tokens_of_the_old_json_file_are_imported_once_and_keep_working(tmp_path: Path) -> None:
    legacy = tmp_path / "tokens.json"
    old = "aifr_old-token"
    legacy.write_text(
        json.dumps(
            {
                "version": 1,
                "tokens": {
                    token_digest(old): {
                        "principal": "bot",
                        "roles": ["agent"],
                        "operator": "alice",
                        "label": "",
                        "created_at": 1.0,
                    }
                },
            }
        )
    )
    tokens = _service(tmp_path / "state.db", legacy)
    found = tokens.verify(old)
    assert found is not None
    assert (found.principal, found.operator) == ("bot", "alice")
    assert not legacy.exists()
    assert (tmp_path / "tokens.json.migrated").exists()


def test_a_malformed_old_token_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    legacy = tmp_path / "tokens.json"
    legacy.write_text('{"tokens": {"abc": {"roles": []}}}')
    with pytest.raises(ConfigError) as caught:
        _service(tmp_path / "state.db", legacy).verify("anything")
    assert caught.value.details["file"] == str(legacy)
    assert legacy.exists()
