"""The MCP HTTP transport's bearer middleware: 401 without a usable token, identity with one."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from starlette.responses import JSONResponse

from aifr.invocation import TokenService
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.tokens import SqliteTokenStore
from aifr.transports.mcp.auth import IDENTITY_SCOPE_KEY, BearerAuthMiddleware


def _tokens(tmp_path: Path) -> TokenService:
    return TokenService(SqliteTokenStore(SqliteDatabase(tmp_path / "state.db")))


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
    app = BearerAuthMiddleware(_whoami, _tokens(tmp_path))
    response = _call(app, {})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "transport.unauthenticated"


def test_request_with_unknown_token_gets_401_saying_the_token_is_invalid(tmp_path: Path) -> None:
    app = BearerAuthMiddleware(_whoami, _tokens(tmp_path))
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
    app = BearerAuthMiddleware(_whoami, _tokens(tmp_path))
    response = _call(app, {}, path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "transport.not_found"
    assert "aifr tokens create" in response.json()["error"]["message"]
    assert _call(app, {}, "/.well-knownish").status_code == 401  # only the folder itself


def test_request_with_a_valid_token_reaches_the_app_as_its_principal(tmp_path: Path) -> None:
    store = _tokens(tmp_path)
    token, _ = store.create("agent-9")
    response = _call(BearerAuthMiddleware(_whoami, store), {"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json() == {"principal": "agent-9"}


def test_expired_and_revoked_tokens_get_401_naming_why(tmp_path: Path) -> None:
    store = _tokens(tmp_path)
    expired, _ = store.create("old", ttl_s=1e-6)
    revoked, record = store.create("gone")
    store.revoke(record.digest[:12])
    app = BearerAuthMiddleware(_whoami, store)
    for token, reason in ((expired, "expired"), (revoked, "revoked")):
        response = _call(app, {"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert response.json()["error"]["details"]["reason"] == reason


def test_an_unreadable_token_store_answers_503_not_500(tmp_path: Path) -> None:
    (tmp_path / "state.db").mkdir()  # a folder where the database file should be
    response = _call(
        BearerAuthMiddleware(_whoami, _tokens(tmp_path)), {"Authorization": "Bearer x"}
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "storage.failed"
