"""Console sessions: a signed-in token, kept server-side, with its CSRF secret.

Signing in with a token gives a random session id in an ``HttpOnly``, ``SameSite=Strict``
cookie scoped to ``/console``; the server keeps only the token's digest, so the cookie
is never the token, and each page checks the token again (a revoked or expired token
ends the session at once). Every state-changing form carries the session's CSRF secret,
compared in constant time; with SameSite=Strict and the API's origin check it is the
third of three locks on a cross-site post.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

from aifr.invocation import TokenRecord, TokenService

__all__ = ["COOKIE", "Session", "SessionStore"]

COOKIE = "aifr_session"


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in console user."""

    id: str
    digest: str
    principal: str
    roles: frozenset[str]
    csrf: str
    expires_at: float


class SessionStore:
    """Sessions of one server process (signing in again is the cure for a restart)."""

    def __init__(self, tokens: TokenService, *, ttl_s: float = 8 * 3600) -> None:
        self.tokens = tokens
        self.ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}

    def open(self, record: TokenRecord) -> Session:
        """A new session for a verified token."""
        session = Session(
            id=secrets.token_urlsafe(32),
            digest=record.digest,
            principal=record.principal,
            roles=frozenset(record.roles),
            csrf=secrets.token_urlsafe(32),
            expires_at=time.time() + self.ttl_s,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie, or ``None`` (unknown, expired, token no longer usable)."""
        session = self._sessions.get(session_id or "")
        if session is None:
            return None
        usable = isinstance(self.tokens.check_digest(session.digest), TokenRecord)
        if not usable or session.expires_at <= time.time():
            self._sessions.pop(session.id, None)
            return None
        return session

    def close(self, session_id: str | None) -> None:
        """Forget a session (sign out)."""
        self._sessions.pop(session_id or "", None)

    @staticmethod
    def csrf_ok(session: Session, presented: str | None) -> bool:
        """Whether a form's CSRF field is this session's secret."""
        return presented is not None and hmac.compare_digest(session.csrf, presented)
