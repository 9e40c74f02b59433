"""Sending ``io.net`` requests over httpx: hop by hop, each hop vetted, bodies capped.

Kept apart from :mod:`aifr.stdlib.net` so that httpx (a tenth of a second of imports)
loads when a process first sends a request, not when it registers the capabilities:
an MCP server or a CLI command that never fetches anything does not pay for it.
"""

from __future__ import annotations

import base64
import contextlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from pydantic import JsonValue

from aifr.errors import ExecutionError, ExecutionTimeoutError, SandboxRefusalError
from aifr.stdlib.net import HttpEcho, HttpResponse
from aifr.stdlib.net_guard import (
    NetGuard,
    Vetted,
    is_credential_header,
    redact_headers,
    redact_url,
    refuse_url,
)

__all__ = ["Fetcher"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TEXT_TYPES = ("text/", "json", "xml", "javascript", "x-www-form-urlencoded", "yaml", "csv")
_REFUSED_HEADERS = frozenset({"host", "transfer-encoding", "content-length", "connection"})
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 9110 token
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")  # no CR, LF, NUL or non-ASCII


@contextlib.contextmanager
def _httpx_errors(url: str) -> Iterator[None]:
    """Translate httpx failures into aifr errors naming the URL."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise ExecutionTimeoutError(
            f"request to {url} timed out: {type(exc).__name__}", url=url
        ) from None
    except httpx.HTTPError as exc:
        raise ExecutionError(
            f"request to {url} failed: {type(exc).__name__}: {exc}", url=url
        ) from None


class _Client:
    """One lazily built httpx client shared by the capabilities (it loads CA certificates)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def get(self) -> httpx.Client:
        """The client, built on first use."""
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    trust_env=False, follow_redirects=False, timeout=httpx.Timeout(self.timeout_s)
                )
            return self._client


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    url: httpx.URL
    headers: dict[str, str]
    content: bytes | None


class Fetcher:
    """Sends a request hop by hop, vetting each, and reads the body under the cap."""

    def __init__(
        self, guard: NetGuard, *, timeout_s: float, max_bytes: int, max_redirects: int
    ) -> None:
        self.guard = guard
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._client = _Client(timeout_s)

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        body: str | None = None,
        json_body: JsonValue = None,
        follow: bool,
        max_bytes: int | None,
        timeout_s: float | None,
    ) -> HttpResponse:
        """Send ``method url`` and return the final response (after redirects if ``follow``).

        Raises:
            SandboxRefusalError: the URL or a redirect hop is refused, a header is one aifr
                sets, or the body passes the cap.
            ExecutionTimeoutError: the whole request ran past its timeout.
            ExecutionError: the request failed (connection, protocol).
        """
        return self._fetch(
            _prepare(method, url, headers, body, json_body),
            follow=follow,
            max_bytes=max_bytes,
            timeout_s=timeout_s,
        )

    def _fetch(
        self, first: _Request, *, follow: bool, max_bytes: int | None, timeout_s: float | None
    ) -> HttpResponse:
        cap = min(max_bytes or self.max_bytes, self.max_bytes)
        deadline = time.monotonic() + min(timeout_s or self.timeout_s, self.timeout_s)
        request = first
        redirects: list[str] = []
        for _ in range(self.max_redirects + 1):
            vetted = self._vet_hop(request.url, redirects)
            with _httpx_errors(redact_url(request.url)):
                response, body = self._send(vetted, request, cap, deadline)
            if follow and response.status_code in _REDIRECTS and "location" in response.headers:
                redirects.append(redact_url(request.url))
                request = _next_hop(request, response)
                continue
            return _output(request, response, body, redirects)
        raise refuse_url(
            "redirect_refused", redact_url(request.url), f"more than {self.max_redirects} redirects"
        )

    def _vet_hop(self, url: httpx.URL, redirects: list[str]) -> Vetted:
        if not redirects:
            return self.guard.vet(url)
        try:
            return self.guard.vet(url)
        except SandboxRefusalError as exc:
            raise refuse_url(
                "redirect_refused",
                redact_url(url),
                exc.message,
                refused_by=exc.rule,
                redirects=list(redirects),
            ) from None

    def _send(
        self, vetted: Vetted, request: _Request, cap: int, deadline: float
    ) -> tuple[httpx.Response, bytes]:
        url = request.url
        headers = {**request.headers, "host": url.netloc.decode("ascii").rsplit("@", 1)[-1]}
        extensions = {"sni_hostname": vetted.host} if url.scheme == "https" else {}
        if url.username:
            pair = f"{url.username}:{url.password or ''}".encode()
            headers.setdefault("authorization", "Basic " + base64.b64encode(pair).decode("ascii"))
        client = self._client.get()
        for index, address in enumerate(vetted.addresses):  # each one vetted; no new lookup
            direct = url.copy_with(host=address, username=None, password=None)
            built = client.build_request(
                request.method,
                direct,
                headers=headers,
                content=request.content,
                timeout=_remaining(deadline, url),  # each wait is bounded by what is left
                extensions=extensions,
            )
            try:
                response = client.send(built, stream=True)
                break
            except httpx.ConnectError:
                if index == len(vetted.addresses) - 1:
                    raise
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise refuse_url(
                    "response_too_large",
                    redact_url(url),
                    f"declares {declared} bytes, cap {cap}",
                    limit=cap,
                )
            body = bytearray()
            for chunk in response.iter_bytes():
                body.extend(chunk)
                if len(body) > cap:
                    raise refuse_url(
                        "response_too_large",
                        redact_url(url),
                        f"body passed the cap of {cap} bytes",
                        limit=cap,
                    )
                _remaining(deadline, url)
        finally:
            response.close()
        return response, bytes(body)


def _remaining(deadline: float, url: httpx.URL) -> float:
    """Seconds left before ``deadline``, the whole-request limit.

    Raises:
        ExecutionTimeoutError: the deadline has passed.
    """
    left = deadline - time.monotonic()
    if left <= 0:
        shown = redact_url(url)
        raise ExecutionTimeoutError(f"request to {shown} ran past its timeout", url=shown)
    return left


def _next_hop(request: _Request, response: httpx.Response) -> _Request:
    location = response.headers["location"]
    try:
        target = request.url.join(location)
    except httpx.InvalidURL as exc:
        raise refuse_url("redirect_refused", location, f"invalid Location: {exc}") from None
    method, content = request.method, request.content
    if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
        method, content = ("HEAD" if method == "HEAD" else "GET"), None
    headers = dict(request.headers)
    if _origin(target) != _origin(request.url):  # credentials were meant for the first origin
        headers = {k: v for k, v in headers.items() if not is_credential_header(k)}
    return _Request(method=method, url=target, headers=headers, content=content)


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)


def _output(
    request: _Request, response: httpx.Response, body: bytes, redirects: list[str]
) -> HttpResponse:
    content_type = response.headers.get("content-type", "").lower()
    is_text = not body or any(marker in content_type for marker in _TEXT_TYPES)
    text = _decode_text(body, response.encoding) if is_text else ""
    return HttpResponse(
        status=response.status_code,
        url=redact_url(request.url),
        headers=redact_headers(response.headers),
        body=text if is_text else base64.b64encode(body).decode("ascii"),
        body_encoding="text" if is_text else "base64",
        size=len(body),
        redirects=redirects,
        request=HttpEcho(
            method=request.method,
            url=redact_url(request.url),
            headers=redact_headers(request.headers),
        ),
    )


def _decode_text(body: bytes, encoding: str | None) -> str:
    """``body`` as text in the declared charset, or UTF-8 when that names no text codec.

    A server may declare any codec name Python knows, ``rot13`` or ``hex`` included,
    which are not text encodings and cannot decode bytes.
    """
    try:
        return body.decode(encoding or "utf-8", "replace")
    except LookupError:
        return body.decode("utf-8", "replace")


def _prepare(
    method: str, url: str, headers: dict[str, str], body: str | None, json_body: JsonValue
) -> _Request:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise refuse_url("invalid_url", redact_url(url), str(exc)) from None
    for name, value in headers.items():
        if name.lower() in _REFUSED_HEADERS:
            raise refuse_url(
                "header_not_allowed",
                redact_url(parsed),
                f"header {name!r} is set by aifr",
                header=name,
            )
        if not _HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(value):
            shown = name if _HEADER_NAME.fullmatch(name) else repr(name)[:40]
            raise refuse_url(
                "header_not_allowed",
                redact_url(parsed),
                f"header {shown} has a name or value HTTP cannot carry "
                "(a control character such as CR or LF, or text outside ASCII)",
                header=shown,
            )
    clean = dict(headers)
    content: bytes | None = None
    if json_body is not None:
        content = httpx.Request("POST", "http://x", json=json_body).content
        clean.setdefault("content-type", "application/json")
    elif body is not None:
        content = body.encode()
    return _Request(method=method, url=parsed, headers=clean, content=content)
