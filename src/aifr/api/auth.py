"""Who calls the API, and whether they may: the ASGI guard, the caller, route authorization.

:class:`ApiGuard` sits in front of every route. In order it refuses a cross-origin
browser request (403), a request without a usable bearer token (401, only ``/health``
is public), a body over the size limit (413), and a token past its rate (429 with
``Retry-After``). The rate is a token bucket per token kept in the state database
(:class:`RateStore`), so every API process on one database draws from the same bucket.

A process takes a small lease of tokens at a time (:func:`lease_size`: about 5% of a
second's rate, at most 64) and spends it in memory for at most :data:`LEASE_S`; the
token's record is checked again with each lease. So a busy token costs one database
round trip per lease instead of two per request, a process never spends tokens the
bucket did not give it (unspent leased tokens are dropped, which can only admit fewer),
and a revoked token is refused within :data:`LEASE_S` in every process (expiry is
checked on every request). Tokens are the one token system of every HTTP surface
(:class:`~aifr.invocation.TokenService`). What a caller may then do is the policy
engine's answer: each route operation is a synthetic capability ``api.<resource>.<verb>``
(:data:`OPERATIONS`) that rules can name, and a DENY comes back as 403 naming the rule
and its reason. Invocations and approval decisions are governed where they happen
(``Runtime.invoke``, the approver rules), not twice.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aifr.api.problems import send_problem
from aifr.capabilities import CapabilitySpec, OperationType, RiskLevel
from aifr.errors import AifrError, ErrorCode, PolicyDeniedError, TransportError
from aifr.invocation import TokenRecord, TokenService, TokenUse, token_digest
from aifr.policy import Decision, PolicyEngine, PolicyRequest

__all__ = [
    "CALLER_SCOPE_KEY",
    "OPERATIONS",
    "ApiGuard",
    "Caller",
    "DirectRoute",
    "RateStore",
    "authorize",
    "caller",
]

logger = logging.getLogger(__name__)

CALLER_SCOPE_KEY = "aifr.caller"
LEASE_S = 0.25
"""How long a process may spend leased rate tokens and trust the token's record."""
MAX_LEASE = 64
PUBLIC_PATHS = frozenset({"/health"})


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated principal of one request, from its token."""

    principal: str
    roles: frozenset[str]
    operator: str | None
    token_digest: str

    @classmethod
    def of(cls, record: TokenRecord) -> Caller:
        """The caller a token record stands for."""
        return cls(record.principal, frozenset(record.roles), record.operator, record.digest)


def _operation(op_id: str, operation: OperationType, risk: RiskLevel, text: str) -> CapabilitySpec:
    return CapabilitySpec.model_validate(
        {
            "id": op_id,
            "description": text,
            "operation_type": operation,
            "risk": {"level": risk, "justification": "an API route operation"},
        }
    )


OPERATIONS: dict[str, CapabilitySpec] = {
    spec.id: spec
    for spec in (
        _operation("api.capabilities.read", OperationType.READ, RiskLevel.LOW, "list or show"),
        _operation("api.runs.read", OperationType.READ, RiskLevel.LOW, "list or show runs"),
        _operation("api.runs.start", OperationType.EXECUTE, RiskLevel.MEDIUM, "start a run"),
        _operation("api.runs.cancel", OperationType.WRITE, RiskLevel.MEDIUM, "cancel a run"),
        _operation("api.runs.prune", OperationType.DELETE, RiskLevel.HIGH, "delete old runs"),
        _operation("api.approvals.read", OperationType.READ, RiskLevel.LOW, "list approvals"),
        _operation("api.audit.read", OperationType.READ, RiskLevel.LOW, "read and verify"),
        _operation("api.audit.export", OperationType.READ, RiskLevel.MEDIUM, "export the trail"),
        _operation("api.metrics.read", OperationType.READ, RiskLevel.LOW, "scrape the metrics"),
        _operation("api.findings.read", OperationType.READ, RiskLevel.LOW, "console findings"),
        _operation("api.runs.resume", OperationType.WRITE, RiskLevel.MEDIUM, "accept drift"),
        _operation("api.findings.export", OperationType.READ, RiskLevel.MEDIUM, "export findings"),
    )
}
"""The route operations policy rules can name (``capability: "api.audit.*"``)."""


def authorize(policy: PolicyEngine, who: Caller, operation: str) -> None:
    """Raise unless the policy allows ``who`` the route operation ``operation``.

    Only ALLOW lets a route run: an API operation cannot wait for an approval, so a
    REQUIRE_APPROVAL answer is refused as well, with the rule that gave it.

    Raises:
        PolicyDeniedError: ``policy.denied``, with ``rule`` and ``reason`` in details.
    """
    spec = OPERATIONS[operation]
    decision = policy.peek(PolicyRequest(who.principal, spec, {}, roles=who.roles))
    if decision.decision is Decision.ALLOW:
        return
    needs = (
        "needs an approval, which an API route cannot wait for"
        if (decision.decision is Decision.REQUIRE_APPROVAL)
        else "is denied"
    )
    raise PolicyDeniedError(
        f"{operation} {needs} for {who.principal}: {decision.reason}",
        code=ErrorCode.POLICY_DENIED,
        operation=operation,
        rule=decision.rule_id,
        reason=decision.reason,
    )


async def caller(request: Request) -> Caller:
    """The authenticated caller of a request (a route dependency; :class:`ApiGuard` set it).

    ``async`` because it only reads the scope: FastAPI would run a plain ``def``
    dependency in a worker thread, a hand-off per request for nothing.

    Raises:
        TransportError: ``transport.unauthenticated`` (only if the guard is missing).
    """
    found = request.scope.get(CALLER_SCOPE_KEY)
    if not isinstance(found, Caller):
        raise TransportError("no authenticated caller", code=ErrorCode.TRANSPORT_UNAUTHENTICATED)
    return found


def _header(scope: Scope, name: bytes) -> str | None:
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", [])
    return next((v.decode("latin-1") for k, v in headers if k == name), None)


def _bearer(scope: Scope) -> str | None:
    value = _header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, credentials = value.partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def _own_origins(scope: Scope) -> set[str]:
    host = (_header(scope, b"host") or "").lower()
    return {f"http://{host}", f"https://{host}"}


class RateStore(Protocol):
    """Token buckets shared by every process of a project (the state database's)."""

    def take(
        self, key: str, *, rate_per_s: float, burst: float, now: float, want: int = 1
    ) -> tuple[int, float]:
        """Take up to ``want`` tokens: how many, and when none, the seconds until one is back."""
        ...


class DirectRoute(Protocol):
    """A route :class:`ApiGuard` answers itself once it holds the body and the caller.

    For the one hot route (``POST .../invoke``) the framework's routing, dependency
    solving and body replay cost more than the route's own work; a direct route takes a
    request it can answer exactly as the framework's route would and returns ``True``,
    and returns ``False`` (having sent nothing) for any other request, which then goes
    to the application as before.
    """

    async def __call__(self, scope: Scope, body: bytes, who: Caller, send: Send) -> bool:
        """Answer the request and return ``True``, or send nothing and return ``False``."""
        ...


def lease_size(rate_per_s: float, burst: int) -> int:
    """Tokens a process takes from the shared bucket at once (1 for small rates)."""
    return max(1, min(MAX_LEASE, int(rate_per_s * 0.05), int(burst * 0.05)))


@dataclass(slots=True)
class _Lease:
    record: TokenRecord
    left: int
    until: float


class ApiGuard:
    """ASGI middleware: origin, bearer token, body size and per-token rate (module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        tokens: TokenService,
        rates: RateStore,
        *,
        max_body_bytes: int,
        rate_per_s: float,
        burst: int,
        allowed_origins: Sequence[str] = (),
        signed_paths: tuple[str, str] | None = None,
        own_auth_prefixes: tuple[str, ...] = (),
        direct: DirectRoute | None = None,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.rates = rates
        self.max_body_bytes = max_body_bytes
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.allowed_origins = {o.rstrip("/").lower() for o in allowed_origins}
        self.signed_paths = signed_paths
        self.own_auth_prefixes = own_auth_prefixes
        self.direct = direct
        self.lease_size = lease_size(rate_per_s, burst)
        self._leases: dict[str, _Lease] = {}
        self._admitting: dict[str, anyio.Event] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Guard HTTP requests; pass lifespan and other scopes through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if origin is not None and origin.rstrip("/").lower() not in (
            _own_origins(scope) | self.allowed_origins
        ):
            error = TransportError(
                f"cross-origin request from {origin[:80]!r} refused; name trusted origins "
                "in [api] allowed_origins",
                code=ErrorCode.TRANSPORT_FORBIDDEN,
            )
            await send_problem(send, error, 403)
            return
        path = str(scope.get("path", ""))
        if (
            path in PUBLIC_PATHS
            or self._is_signed_callback(scope, path)
            or path.startswith(self.own_auth_prefixes)
        ):
            await self._with_body(scope, receive, send)
            return
        token = _bearer(scope)
        try:
            checked, wait = await self._check(token)
        except AifrError as exc:
            logger.exception("token store unreadable")
            await send_problem(send, exc, 503)
            return
        if not isinstance(checked, TokenRecord):
            error = checked.error(hint="mint one with 'aifr tokens create --principal NAME'")
            challenge = b'Bearer realm="aifr"' + (
                b', error="invalid_token"' if token is not None else b""
            )
            await send_problem(send, error, 401, [(b"www-authenticate", challenge)])
            return
        if wait > 0:
            error = TransportError(
                f"rate limit of this token reached ({self.rate_per_s:g}/s, burst "
                f"{self.burst}); retry in {wait:.2f}s",
                code=ErrorCode.TRANSPORT_RATE_LIMITED,
                retry_after_s=round(wait, 3),
            )
            retry = str(max(1, math.ceil(wait))).encode("ascii")
            await send_problem(send, error, 429, [(b"retry-after", retry)])
            return
        who = Caller.of(checked)
        scope[CALLER_SCOPE_KEY] = who
        await self._with_body(scope, receive, send, who)

    def _is_signed_callback(self, scope: Scope, path: str) -> bool:
        """A signed approval callback (no token: its HMAC signature authenticates it)."""
        if self.signed_paths is None or scope.get("method") != "POST":
            return False
        prefix, suffix = self.signed_paths
        return (
            path.startswith(prefix)
            and path.endswith(suffix)
            and "/" not in path[len(prefix) : -len(suffix)]
            and _header(scope, b"x-aifr-signature") is not None
        )

    async def _check(self, token: str | None) -> tuple[TokenRecord | TokenUse, float]:
        """The token's record (or why it is refused) and the wait before its next call.

        From this process's lease while one is left and fresh; otherwise one thread takes
        the next lease while the token's other requests wait for it instead of each taking
        a lease of its own (which would cost a round trip each and drop all but the last).
        """
        if token is None:
            return TokenUse("missing"), 0.0
        digest = token_digest(token)
        leased = self._from_lease(digest)
        while leased is None and (pending := self._admitting.get(digest)) is not None:
            await pending.wait()
            leased = self._from_lease(digest)
        if leased is not None:
            return leased
        done = self._admitting[digest] = anyio.Event()
        try:
            return await anyio.to_thread.run_sync(self._admit, token)
        finally:
            del self._admitting[digest]
            done.set()

    def _from_lease(self, digest: str) -> tuple[TokenRecord, float] | None:
        """Admit from this process's lease of the token's tokens, if one is left and fresh."""
        lease = self._leases.get(digest)
        if lease is None or lease.left <= 0 or time.monotonic() >= lease.until:
            return None
        expires = lease.record.expires_at
        if expires is not None and time.time() >= expires:
            return None  # the store says "expired"
        lease.left -= 1
        return lease.record, 0.0

    def _admit(self, token: str | None) -> tuple[TokenRecord | TokenUse, float]:
        """Check the token in the store and take a lease of its rate tokens (a thread)."""
        checked = self.tokens.check(token)
        if not isinstance(checked, TokenRecord):
            if token is not None:
                self._leases.pop(token_digest(token), None)
            return checked, 0.0
        taken, wait = self.rates.take(
            checked.digest,
            rate_per_s=self.rate_per_s,
            burst=self.burst,
            now=time.time(),
            want=self.lease_size,
        )
        if taken > 1:
            self._leases[checked.digest] = _Lease(checked, taken - 1, time.monotonic() + LEASE_S)
        else:
            self._leases.pop(checked.digest, None)
        return checked, wait

    async def _with_body(
        self, scope: Scope, receive: Receive, send: Send, who: Caller | None = None
    ) -> None:
        declared = _header(scope, b"content-length")
        too_large = TransportError(
            f"request body over {self.max_body_bytes} bytes ([api] max_body_bytes)",
            code=ErrorCode.TRANSPORT_TOO_LARGE,
            limit=self.max_body_bytes,
        )
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await send_problem(send, too_large, 413)
            return
        if scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        seen: deque[Message] = deque()
        size = 0
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                await send_problem(send, too_large, 413)
                return
            if not message.get("more_body", False):
                if who is not None and self.direct is not None:
                    body = b"".join(m.get("body", b"") for m in seen)
                    if await self.direct(scope, body, who, send):
                        return
                break

        async def replay() -> Message:
            return seen.popleft() if seen else await receive()

        await self.app(scope, replay, send)
