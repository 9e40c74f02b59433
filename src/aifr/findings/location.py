"""Where a finding is: a URL or ``host[:port]`` split into parts, and its normalized key.

Parsers call :func:`target_of` once per record, so it has a fast path for the common
``scheme://host[:port]/path?query`` shape (plain string operations, no
``urllib.parse``) and falls back to ``urlsplit`` for anything unusual (user info, IPv6
literals, blanks, odd ports). Both paths give the same result; a test holds them equal.

The normalized ``location`` is what fingerprints compare (:mod:`aifr.findings.fingerprint`):
scheme and host lower-cased, a trailing dot on the host dropped, the scheme's default
port dropped, an empty path written ``/``, the fragment dropped; path and query are kept
as written, since servers may treat them case-sensitively. A value that is not a URL
(``host:port``, a bare name) is stripped and lower-cased, with a trailing dot dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Target", "normalize_location", "target_of"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}
_ODD_NETLOC = frozenset("@[]\\ \t\r\n%")


@dataclass(frozen=True, slots=True)
class Target:
    """The parts of a location; ``location`` is its normalized key (``""`` when empty)."""

    location: str = ""
    url: str | None = None
    host: str | None = None
    port: int | None = None
    scheme: str | None = None
    path: str | None = None


_EMPTY = Target()


def target_of(value: str | None) -> Target:
    """Split a URL or ``host[:port]`` into its parts (explicit port, else the scheme's)."""
    if not value:
        return _EMPTY
    text = value.strip()
    cut = text.find("://")
    if cut > 0:
        return _fast_url(value, text, cut) or _slow_url(value, text) or _plain(text)
    return _plain(text)


def normalize_location(value: str) -> str:
    """The normalized key of a location (see the module docstring)."""
    return target_of(value).location


def _fast_url(value: str, text: str, cut: int) -> Target | None:
    scheme = text[:cut]
    if not scheme.isascii() or not scheme.isalpha():
        return None
    start = cut + 3
    end = len(text)
    for mark in "/?#":
        found = text.find(mark, start, end)
        if found != -1:
            end = found
    netloc = text[start:end]
    if not netloc or not _ODD_NETLOC.isdisjoint(netloc):
        return None
    name, sep, port_text = netloc.rpartition(":")
    if not sep:
        name, port_text = netloc, ""
    elif not port_text.isdigit() or not port_text.isascii() or not name:
        return None
    rest = text[end:]
    path, mark, query = rest.partition("#")[0].partition("?")
    return _url_target(value, scheme.lower(), name, port_text, path, query, bool(mark))


def _slow_url(value: str, text: str) -> Target | None:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    name = parts.hostname
    host = f"[{name}]" if ":" in name else name
    if parts.username is not None:
        host = f"{parts.username}@{host}"
    return _url_target(
        value,
        parts.scheme.lower(),
        host,
        "" if port is None else str(port),
        parts.path,
        parts.query,
        bool(parts.query),
        hostname=name,
    )


def _url_target(
    value: str,
    scheme: str,
    netloc_host: str,
    port_text: str,
    path: str,
    query: str,
    has_query: bool,
    hostname: str | None = None,
) -> Target:
    host_key = netloc_host.lower().rstrip(".")
    port = int(port_text) if port_text else _DEFAULT_PORTS.get(scheme)
    if port is not None and port > 65535:
        port = None
    default = _DEFAULT_PORTS.get(scheme)
    netloc = host_key if not port_text or int(port_text) == default else f"{host_key}:{port_text}"
    location = f"{scheme}://{netloc}{path or '/'}{'?' + query if has_query and query else ''}"
    host = (hostname if hostname is not None else netloc_host).lower().rstrip(".")
    return Target(
        location=location, url=value, host=host, port=port, scheme=scheme, path=path or "/"
    )


def _plain(text: str) -> Target:
    name, sep, port_text = text.rpartition(":")
    if sep and port_text.isdigit() and port_text.isascii() and name and not name.endswith(":"):
        host = name.strip("[]").rstrip(".").lower()
        number = int(port_text)
        location = f"{name.rstrip('.').lower()}:{port_text}"
        return Target(location=location, host=host, port=number if number <= 65535 else None)
    location = text.rstrip(".").lower()
    if not text or "/" in text or " " in text:
        return Target(location=location)
    return Target(location=location, host=location)
