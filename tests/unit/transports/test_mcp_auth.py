"""Bearer tokens: minted once, stored as digests, verified, revoked; 401 without one."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.responses import JSONResponse

from aifr.errors import ConfigError, ErrorCode
from aifr.transports.mcp.auth import (
    IDENTITY_SCOPE_KEY,
    BearerAuthMiddleware,
    McpIdentity,
    TokenStore,
    token_digest,
)


def test_created_token_verifies_to_its_principal_roles_and_operator(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / ".aifr" / "tokens.json")
    token, record = store.create("agent-7", roles=["ops", "dev"], operator="alice", label="ci")
    assert store.verify(token) == McpIdentity("agent-7", frozenset({"ops", "dev"}), "alice")
    assert record.digest == token_digest(token)
    assert store.verify(token + "x") is None


def test_token_file_holds_only_digests_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token, _ = TokenStore(path).create("agent")
    text = path.read_text()
    assert token not in text
    assert token_digest(token) in json.loads(text)["tokens"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_token_minted_by_another_process_is_seen_without_restart(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    server_side = TokenStore(path)
    assert server_side.records() == []
    token, _ = TokenStore(path).create("late")
    assert server_side.verify(token) == McpIdentity("late")


def test_revoked_token_no_longer_verifies(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    token, record = store.create("agent")
    store.revoke(record.digest[:10])
    assert store.verify(token) is None


def test_revoke_with_an_unknown_prefix_names_the_problem(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.create("agent")
    with pytest.raises(ConfigError) as caught:
        store.revoke("zzzz")
    assert caught.value.code is ErrorCode.CONFIG_INVALID


def test_malformed_token_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('{"tokens": {"abc": {"roles": []}}}')
    with pytest.raises(ConfigError) as caught:
        TokenStore(path).verify("anything")
    assert "principal" in caught.value.message


@pytest.mark.parametrize(
    ("principal", "operator", "field"),
    [("  ", None, "principal"), (" bob", None, "principal"), ("bob", "ali\nce", "operator")],
)
def test_a_token_needs_names_for_its_principal_and_operator(
    tmp_path: Path, principal: str, operator: str | None, field: str
) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    with pytest.raises(ConfigError) as refused:
        store.create(principal, operator=operator)
    assert refused.value.details["field"] == field
    assert store.records() == []


async def _whoami(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    identity = scope[IDENTITY_SCOPE_KEY]
    response = JSONResponse({"principal": identity.principal})
    await response(scope, receive, send)


def _call(app: BearerAuthMiddleware, headers: dict[str, str], path: str = "/mcp") -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get(path, headers=headers)

    return anyio.run(go)


def test_request_without_token_gets_401_with_the_error_payload(tmp_path: Path) -> None:
    app = BearerAuthMiddleware(_whoami, TokenStore(tmp_path / "tokens.json"))
    response = _call(app, {})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "transport.unauthenticated"


def test_request_with_unknown_token_gets_401_saying_the_token_is_invalid(tmp_path: Path) -> None:
    app = BearerAuthMiddleware(_whoami, TokenStore(tmp_path / "tokens.json"))
    response = _call(app, {"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="aifr", error="invalid_token"'
    assert "nope" not in response.text
    # Without a token there was nothing to find invalid (RFC 6750, section 3.1).
    assert _call(app, {}).headers["www-authenticate"] == 'Bearer realm="aifr"'


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ],
)
def test_oauth_discovery_finds_no_metadata_rather_than_a_401_loop(
    tmp_path: Path, path: str
) -> None:
    app = BearerAuthMiddleware(_whoami, TokenStore(tmp_path / "tokens.json"))
    response = _call(app, {}, path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "transport.not_found"
    assert "aifr mcp token create" in response.json()["error"]["message"]
    assert _call(app, {}, "/.well-knownish").status_code == 401  # only the folder itself


def test_request_with_a_valid_token_reaches_the_app_as_its_principal(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    token, _ = store.create("agent-9")
    response = _call(BearerAuthMiddleware(_whoami, store), {"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json() == {"principal": "agent-9"}


def test_unreadable_token_file_answers_503_not_500(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("not json")
    response = _call(BearerAuthMiddleware(_whoami, TokenStore(path)), {"Authorization": "Bearer x"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "config.invalid"
