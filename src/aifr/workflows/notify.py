"""Approval notifications: signed webhooks through a durable outbox, and the callback.

When a run pauses for an approval, the engine queues an ``approval.requested``
notification in the same transaction as the pause (the outbox in the state database).
:class:`WebhookNotifier` delivers due items, and when the receiver is down it retries
with exponential backoff, so a notification is never lost and never blocks the run.

Every request is signed: ``X-Aifr-Timestamp`` is the Unix time of sending and
``X-Aifr-Signature`` is ``sha256=`` + hex HMAC-SHA256 of ``"<timestamp>." + body``
under the shared secret. A receiver (and aifr's own callback endpoint) refuses a
signature that does not match and a timestamp outside the replay window, and the
callback remembers signatures it accepted within the window, so a captured request
cannot be replayed.

:func:`approval_callback_app` is the endpoint an approver's tool calls back:
``POST /approvals/{id}/decision`` with ``{"approval_id", "decision": "approve"|"reject",
"approver", "comment"}``; the body names the approval because the signature covers the
body, not the URL. The approver's rights are checked by the policy, exactly as for
``aifr approvals approve``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable

import httpx
from pydantic import JsonValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aifr.errors import AifrError, ApprovalError, ErrorCode, http_status_for
from aifr.invocation import ApprovalService
from aifr.workflows.ports import NotificationOutbox, OutboxItem

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookNotifier",
    "approval_callback_app",
    "sign",
    "verify_signature",
]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Aifr-Signature"
TIMESTAMP_HEADER = "X-Aifr-Timestamp"


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: bytes,
    body: bytes,
    *,
    timestamp: str | None,
    signature: str | None,
    now: float,
    window_s: float,
) -> int:
    """Check a signed request; returns its timestamp.

    Raises:
        ApprovalError: ``approval.bad_signature`` when a header is missing, the
            timestamp is outside the replay window or the signature does not match.
    """
    if not timestamp or not signature or not timestamp.isdigit():
        raise _bad_signature(f"missing or malformed {TIMESTAMP_HEADER}/{SIGNATURE_HEADER}")
    sent = int(timestamp)
    if abs(now - sent) > window_s:
        raise _bad_signature(f"timestamp {sent} is outside the replay window of {window_s:g}s")
    if not hmac.compare_digest(sign(secret, sent, body), signature):
        raise _bad_signature("the signature does not match the body")
    return sent


def _bad_signature(reason: str) -> ApprovalError:
    return ApprovalError(
        f"rejected a signed request: {reason}", code=ErrorCode.APPROVAL_BAD_SIGNATURE
    )


class WebhookNotifier:
    """Delivers queued notifications, signed, retrying with backoff while receivers are down."""

    def __init__(
        self,
        outbox: NotificationOutbox,
        secret: bytes,
        *,
        timeout_s: float = 5.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._secret = secret
        self._timeout_s = timeout_s
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._clock = clock
        self._client = httpx.Client(timeout=timeout_s)

    def deliver_due(self) -> int:
        """Try every due notification once; returns how many were delivered."""
        delivered = 0
        for item in self._outbox.due(self._clock()):
            if self._send(item):
                delivered += 1
        return delivered

    def _send(self, item: OutboxItem) -> bool:
        body = json.dumps(item.notification.body, sort_keys=True).encode()
        sent_at = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(sent_at),
            SIGNATURE_HEADER: sign(self._secret, sent_at, body),
            "X-Aifr-Event": item.notification.kind,
            "X-Aifr-Delivery": str(item.id),
        }
        try:
            response = self._client.post(item.notification.url, content=body, headers=headers)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            delay = min(self._max_backoff_s, self._backoff_s * 2**item.attempts)
            logger.warning(
                "webhook %s to %s failed (%s); retrying in %.1fs",
                item.id,
                item.notification.url,
                type(exc).__name__,
                delay,
            )
            self._outbox.retry_later(item.id, self._clock() + delay, f"{type(exc).__name__}: {exc}")
            return False
        self._outbox.delivered(item.id, self._clock())
        return True

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()


class _SeenSignatures:
    """Signatures accepted within the replay window (a replay inside it is refused)."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, signature: str, now: float) -> bool:
        with self._lock:
            self._seen = {s: t for s, t in self._seen.items() if now - t <= 2 * self._window_s}
            if signature in self._seen:
                return False
            self._seen[signature] = now
            return True


def approval_callback_app(
    approvals: ApprovalService,
    secret: bytes,
    *,
    window_s: float = 300.0,
    on_decided: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """A small ASGI app taking signed approval decisions (see the module docstring)."""
    seen = _SeenSignatures(window_s)

    def error(exc: AifrError) -> JSONResponse:
        status = 401 if exc.code is ErrorCode.APPROVAL_BAD_SIGNATURE else http_status_for(exc.code)
        return JSONResponse(exc.to_payload(), status_code=status)

    async def decide(request: Request) -> JSONResponse:
        approval_id = request.path_params["approval_id"]
        body = await request.body()
        try:
            verify_signature(
                secret,
                body,
                timestamp=request.headers.get(TIMESTAMP_HEADER),
                signature=request.headers.get(SIGNATURE_HEADER),
                now=clock(),
                window_s=window_s,
            )
            if not seen.first_use(request.headers[SIGNATURE_HEADER], clock()):
                raise _bad_signature("this signed request was already used (replay)")
            payload = _decision_payload(body, approval_id)
            approver = str(payload["approver"])
            comment = str(payload.get("comment") or "")
            if payload["decision"] == "approve":
                # The HMAC signature proves the decision comes from the approval system
                # holding the shared secret, which authenticated its user.
                record = await approvals.aapprove(
                    approval_id, approver, comment=comment, authenticated=True
                )
            else:
                record = await approvals.areject(
                    approval_id, approver, reason=comment, authenticated=True
                )
        except AifrError as exc:
            return error(exc)
        if on_decided is not None:
            on_decided(approval_id)
        return JSONResponse({"ok": True, "approval_id": record.id, "status": record.status.value})

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/approvals/{approval_id}/decision", decide, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )


def _decision_payload(body: bytes, approval_id: str) -> dict[str, JsonValue]:
    """The decision a verified body carries, for the approval the URL names.

    The signature covers the body, not the URL, so the body must name the approval it
    decides: otherwise a decision signed for one approval could be posted to another's
    URL (to a second worker, or to this one after a restart, whose replay memory is
    gone) and approve a request its signer never saw.

    Raises:
        ApprovalError: ``approval.invalid`` for a malformed body, or
            ``approval.bad_signature`` when it was signed for another approval.
    """
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    if (
        not isinstance(payload, dict)
        or payload.get("decision") not in ("approve", "reject")
        or not isinstance(payload.get("approver"), str)
        or not payload["approver"]
        or not isinstance(payload.get("approval_id"), str)
    ):
        raise ApprovalError(
            'the body must be JSON {"approval_id": "<the id in the URL>", '
            '"decision": "approve"|"reject", "approver": "...", "comment": "..."}',
            code=ErrorCode.APPROVAL_INVALID,
        )
    if payload["approval_id"] != approval_id:
        raise _bad_signature(
            f"the request was signed for approval {payload['approval_id']!r}, not {approval_id!r}"
        )
    return payload
