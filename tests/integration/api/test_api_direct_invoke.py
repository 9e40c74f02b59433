"""The invoke route answered from the guard (``DirectInvoke``) against the FastAPI route.

Every request is sent twice, to the API as served and to the same API with the direct
route switched off, and both answers must agree (status, media type, body but for the
ids and timings of each call); the well-formed ones must not reach the framework at all,
and the rest must. The guard's lease of rate tokens is taken once for a burst of
concurrent requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from aifr.api import create_api
from aifr.api.auth import ApiGuard
from aifr.api.routes.capabilities import DirectInvoke
from aifr.app import App, build_app
from aifr.config import init_project

CAPABILITIES = '''
from aifr import capability


@capability("shop.noop", operation="READ", risk="LOW")
def noop() -> dict[str, bool]:
    """Do nothing."""
    return {"ok": True}


@capability("shop.greet", operation="READ", risk="LOW")
def greet(name: str) -> dict[str, str]:
    """Greet."""
    return {"greeting": f"Hello, {name}!"}


@capability("shop.boom", operation="READ", risk="LOW")
def boom() -> dict[str, str]:
    """Always fails."""
    raise RuntimeError("kaboom")


@capability("shop.launch", operation="EXECUTE", risk="HIGH")
def launch(target: str) -> dict[str, str]:
    """Launch something."""
    return {"launched": target}


@capability("shop.wipe", operation="DELETE", risk="HIGH")
def wipe() -> None:
    """Wipe."""
'''

POLICY = """\
version: 1
roles:
  approver:
    principals: [alice]
rules:
  - id: no-wipe
    when:
      capability: "shop.wipe"
    decision: DENY
    reason: wiping is off limits
  - id: launch-needs-approval
    when:
      capability: "shop.launch"
    decision: REQUIRE_APPROVAL
    reason: launches need a second pair of eyes
    approvers: [approver]
  - id: allow-reads
    when:
      operation: READ
    decision: ALLOW
    reason: reads are fine
approvals:
  - risk: HIGH
    roles: [approver]
"""

VOLATILE = {"request_id", "trace_id", "audit_id", "audit_seq", "approval_id", "timing"}
JSON = {"content-type": "application/json"}
INVOKE = "/v1/capabilities/{}/invoke"

# (path, headers, body): well-formed requests the guard answers itself, whatever the
# governed call's outcome
DIRECT = [
    (INVOKE.format("shop.noop"), JSON, b'{"inputs": {}}'),
    (INVOKE.format("shop.noop@1.0.0"), JSON, b"{}"),
    (INVOKE.format("shop.greet"), JSON, '{"inputs": {"name": "Zoë"}}'.encode()),
    (INVOKE.format("shop.greet"), {"content-type": "Application/JSON; charset=utf-8"}, b"{}"),
    (INVOKE.format("shop.greet"), JSON, b'{"inputs": {"name": 7}}'),
    (INVOKE.format("shop.boom"), JSON, b'{"inputs": {}}'),
    (INVOKE.format("shop.launch"), JSON, b'{"inputs": {"target": "moon"}}'),
    (INVOKE.format("shop.wipe"), JSON, b'{"inputs": {}}'),
    (INVOKE.format("shop.nothing"), JSON, b'{"inputs": {}}'),
    (
        INVOKE.format("shop.noop"),
        JSON,
        b'{"inputs": {}, "idempotency_key": "KEY"}',
    ),  # one key per pass
    (INVOKE.format("shop.greet"), JSON, b'{"inputs": {"name": NaN}}'),  # json reads NaN
]
# requests the route refuses or reads otherwise: left to the framework
FRAMEWORK = [
    (INVOKE.format("shop.noop"), JSON, b'{"inputs": {}'),
    (INVOKE.format("shop.noop"), JSON, b'{"inputs": {}, "extra": 1}'),
    (INVOKE.format("shop.noop"), JSON, b"[]"),
    (INVOKE.format("shop.noop"), JSON, b""),
    (INVOKE.format("shop.noop"), JSON, b'{"inputs": {}, "idempotency_key": ""}'),
    (INVOKE.format("shop.noop"), {"content-type": "text/plain"}, b'{"inputs": {}}'),
    (INVOKE.format("shop.noop"), {"content-type": "application/vnd.x+json"}, b"{}"),
    (INVOKE.format("shop%20noop"), JSON, b"{}"),
    (INVOKE.format("shop.noop") + "/", JSON, b"{}"),
    ("/v1/capabilities/a/b/invoke", JSON, b"{}"),
]


class _Spy:
    """Counts the requests that reach the wrapped application."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await self.app(scope, receive, send)


class _CountingRates:
    def __init__(self, rates: Any) -> None:
        self.rates = rates
        self.takes = 0

    def take(self, key: str, **kwargs: Any) -> tuple[int, float]:
        self.takes += 1
        taken: tuple[int, float] = self.rates.take(key, **kwargs)
        return taken


def _app(tmp_path: Path) -> App:
    project = tmp_path / "shop"
    init_project(project)
    (project / "shop_caps.py").write_text(CAPABILITIES)
    (project / "policies" / "default.yaml").write_text(POLICY)
    config = project / "aifr.toml"
    text = config.read_text().replace(
        "capability_modules = []", 'capability_modules = ["shop_caps"]'
    )
    config.write_text(text + "\n[api]\nrate_per_s = 1000.0\nburst = 1000\n")
    return build_app(project, require_project=True)


def _guards(app: App) -> tuple[ApiGuard, _Spy, ApiGuard]:
    served = create_api(app)
    plain = create_api(app)
    assert isinstance(served, ApiGuard) and isinstance(plain, ApiGuard)
    assert served.direct is not None
    spy = served.app = _Spy(served.app)
    plain.direct = None
    return served, spy, plain


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "*" if k in VOLATILE else _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, str) and "apr_" in value:  # an approval id in a message
        return value.split("apr_")[0]
    return value


def _answer(response: httpx.Response) -> tuple[int, str, str | None, Any]:
    try:
        body: Any = _normal(response.json())
    except ValueError:
        body = response.text
    return (
        response.status_code,
        response.headers.get("content-type", ""),
        response.headers.get("retry-after"),
        body,
    )


def _both(
    tmp_path: Path, requests: list[tuple[str, dict[str, str], bytes]]
) -> tuple[list[Any], list[Any], list[int]]:
    app = _app(tmp_path)
    token, _ = app.tokens.create("bob")
    served, spy, plain = _guards(app)
    auth = {"authorization": f"Bearer {token}"}

    async def main() -> tuple[list[Any], list[Any], list[int]]:
        direct, framework, reached = [], [], []
        for guard, answers, key in ((served, direct, b"k-1"), (plain, framework, b"k-2")):
            transport = httpx.ASGITransport(app=guard)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                for path, headers, body in requests:
                    before = spy.calls
                    content = body.replace(b"KEY", key)
                    response = await client.post(path, headers=auth | headers, content=content)
                    answers.append(_answer(response))
                    if guard is served:
                        reached.append(spy.calls - before)
        return direct, framework, reached

    try:
        return anyio.run(main)
    finally:
        app.close()


def test_a_well_formed_invoke_is_answered_by_the_guard_as_the_route_would(
    tmp_path: Path,
) -> None:
    direct, framework, reached = _both(tmp_path, DIRECT)
    assert reached == [0] * len(DIRECT)  # none of them went through the framework
    assert direct == framework
    statuses = [status for status, *_ in direct]
    assert statuses == [200, 200, 200, 422, 422, 500, 202, 403, 404, 200, 422], direct
    assert direct[2][3]["output"] == {"greeting": "Hello, Zoë!"}
    assert direct[5][1] == "application/problem+json"


def test_an_invoke_the_route_refuses_is_left_to_the_framework(tmp_path: Path) -> None:
    direct, framework, reached = _both(tmp_path, FRAMEWORK)
    assert reached == [1] * len(FRAMEWORK)
    assert direct == framework
    assert direct[0][0] == 422 and direct[0][1] == "application/problem+json"


def test_while_the_framework_traces_requests_it_serves_invoke_itself(tmp_path: Path) -> None:
    app = _app(tmp_path)
    token, _ = app.tokens.create("bob")
    guard, spy, _ = _guards(app)
    traced = {"on": True}
    guard.direct = DirectInvoke(app, traced=lambda: traced["on"])

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            codes = []
            for on in (True, False):
                traced["on"] = on
                response = await client.post(
                    INVOKE.format("shop.noop"),
                    headers={"authorization": f"Bearer {token}"},
                    json={"inputs": {}},
                )
                codes.append(response.status_code)
            return codes

    try:
        assert anyio.run(main) == [200, 200]
    finally:
        app.close()
    assert spy.calls == 1


@pytest.mark.parametrize("calls", [16])
def test_concurrent_requests_share_one_lease_of_rate_tokens(tmp_path: Path, calls: int) -> None:
    app = _app(tmp_path)
    token, _ = app.tokens.create("bob")
    guard, _, _ = _guards(app)
    rates = guard.rates = _CountingRates(guard.rates)
    assert guard.lease_size >= calls

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=guard)
        codes: list[int] = []
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def one() -> None:
                response = await client.post(
                    INVOKE.format("shop.noop"),
                    headers={"authorization": f"Bearer {token}"},
                    json={"inputs": {}},
                )
                codes.append(response.status_code)

            async with anyio.create_task_group() as group:
                for _ in range(calls):
                    group.start_soon(one)
        return codes

    try:
        assert anyio.run(main) == [200] * calls
    finally:
        app.close()
    # one round trip to the shared bucket for all of them, not one per waiting request
    assert rates.takes == 1
