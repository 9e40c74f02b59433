"""``io.net.http_get`` (READ, LOW) and ``io.net.http_request`` (NETWORK, HIGH) over httpx.

Each hop of a request is vetted before it is sent (``net_guard``: allowlists, one DNS
lookup, public addresses only), and the request is sent to a vetted address itself with
the original ``Host`` header and TLS server name, so a DNS answer that changes between
the check and the connection (rebinding) cannot redirect it. Redirects are followed by
hand and each hop is vetted again. The body is streamed against a size cap (after
content decoding, so a compression bomb is caught), and credential headers are redacted
in the echoed request and response. The sending lives in :mod:`aifr.stdlib.net_fetch`,
loaded with httpx on a process's first request.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, cast

from pydantic import JsonValue
from typing_extensions import TypedDict

from aifr.capabilities import CallInfo, Capability, Compensation, capability
from aifr.errors import AifrError
from aifr.stdlib.calls import CallRecords
from aifr.stdlib.limits import Positive, Seconds
from aifr.stdlib.net_guard import NetGuard
from aifr.stdlib.permissions import PermissionTable

if TYPE_CHECKING:
    from aifr.stdlib.net_fetch import Fetcher

__all__ = ["HttpEcho", "HttpResponse", "build_net_capabilities"]


class HttpEcho(TypedDict):
    """The request as sent, with credentials redacted."""

    method: str
    url: str
    headers: dict[str, str]


class HttpResponse(TypedDict):
    """What the ``io.net.*`` capabilities return."""

    status: int
    url: str
    headers: dict[str, str]
    body: str
    body_encoding: Literal["text", "base64"]
    size: int
    redirects: list[str]
    request: HttpEcho


Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class _FetcherOnFirstUse:
    """Builds the :class:`~aifr.stdlib.net_fetch.Fetcher` when the first request is sent."""

    def __init__(
        self, guard: NetGuard, *, timeout_s: float, max_bytes: int, max_redirects: int
    ) -> None:
        self._guard = guard
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes
        self._max_redirects = max_redirects
        self._fetcher: Fetcher | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Fetcher:
        with self._lock:
            if self._fetcher is None:
                from aifr.stdlib.net_fetch import Fetcher  # httpx loads here, once

                self._fetcher = Fetcher(
                    self._guard,
                    timeout_s=self._timeout_s,
                    max_bytes=self._max_bytes,
                    max_redirects=self._max_redirects,
                )
            return self._fetcher


def build_net_capabilities(
    *,
    records: CallRecords,
    allow_hosts: Sequence[str],
    allow_schemes: Sequence[str],
    allow_private: bool,
    timeout_s: float,
    max_response_bytes: int,
    max_redirects: int = 5,
    permissions: PermissionTable | None = None,
) -> list[Capability]:
    """``io.net.http_get`` and ``io.net.http_request`` under one guard."""
    guard = NetGuard(
        allow_hosts=allow_hosts,
        allow_schemes=allow_schemes,
        allow_private=allow_private,
        permissions=permissions,
    )
    fetcher = _FetcherOnFirstUse(
        guard, timeout_s=timeout_s, max_bytes=max_response_bytes, max_redirects=max_redirects
    )

    @capability(
        "io.net.http_get",
        operation="READ",
        risk="LOW",
        idempotent=True,
        side_effect_scope="remote",
        side_effect_description="reads from an allowlisted remote host; changes nothing there",
        tags=("stdlib", "net"),
        timeout_s=timeout_s + 5,
        justification="GET and HEAD are safe methods, to allowlisted public hosts only",
    )
    def http_get(
        url: str,
        method: Literal["GET", "HEAD"] = "GET",
        headers: dict[str, str] | None = None,
        follow_redirects: bool = True,
        max_bytes: Positive | None = None,
        timeout_s: Seconds | None = None,
    ) -> HttpResponse:
        """Fetch a URL with GET or HEAD from an allowlisted host.

        Args:
            url: The http(s) URL.
            method: GET or HEAD.
            headers: Request headers (credentials are redacted in the echo).
            follow_redirects: Follow redirects, vetting every hop.
            max_bytes: Refuse bodies larger than this (at most the configured cap).
            timeout_s: Seconds for the whole request (at most the configured timeout).
        """
        return fetcher().send(
            method,
            url,
            headers=headers or {},
            follow=follow_redirects,
            max_bytes=max_bytes,
            timeout_s=timeout_s,
        )

    @capability(
        "io.net.http_request",
        operation="NETWORK",
        risk="HIGH",
        reversible=False,
        compensation=Compensation(supported=True, strategy="declared_by_caller"),
        side_effect_scope="remote",
        side_effect_description=(
            "sends a request that may change remote state; it can be undone only by a "
            "compensating request the caller (a workflow step) declares"
        ),
        tags=("stdlib", "net"),
        timeout_s=timeout_s + 5,
        justification="remote effects are irreversible unless the caller declares a compensation",
    )
    def http_request(
        url: str,
        call: CallInfo,
        method: Method = "POST",
        headers: dict[str, str] | None = None,
        body: str | None = None,
        json_body: JsonValue = None,
        follow_redirects: bool = False,
        max_bytes: Positive | None = None,
        timeout_s: Seconds | None = None,
    ) -> HttpResponse:
        """Send an HTTP request with any method to an allowlisted host.

        Args:
            url: The http(s) URL.
            method: The HTTP method.
            headers: Request headers (credentials are redacted in the echo).
            body: A text body.
            json_body: A JSON body (sets ``content-type: application/json``).
            follow_redirects: Follow redirects, vetting every hop.
            max_bytes: Refuse bodies larger than this (at most the configured cap).
            timeout_s: Seconds for the whole request (at most the configured timeout).
            call: Filled by the runtime; its idempotency key is sent as ``Idempotency-Key``
                and a repeat after a recorded response returns that response.
        """
        inputs: dict[str, JsonValue] = {
            "url": url, "method": method, "headers": dict(headers or {}), "body": body,
            "json_body": json_body, "follow_redirects": follow_redirects,
        }  # fmt: skip
        earlier = records.begin("io.net.http_request", call, inputs)
        if earlier is not None and earlier.result is not None:
            return cast(HttpResponse, earlier.result)
        sent = dict(headers or {})
        if call.idempotency_key and not any(k.lower() == "idempotency-key" for k in sent):
            sent["Idempotency-Key"] = call.idempotency_key  # the server can drop a repeat
        try:
            response = fetcher().send(
                method,
                url,
                headers=sent,
                body=body,
                json_body=json_body,
                follow=follow_redirects,
                max_bytes=max_bytes,
                timeout_s=timeout_s,
            )
        except AifrError:
            records.forget("io.net.http_request", call)
            raise
        records.finish("io.net.http_request", call, cast(dict[str, JsonValue], response))
        return response

    return [http_get, http_request]
