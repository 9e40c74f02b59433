"""Where a finding is: a URL or ``host[:port]`` split into parts, and its normalized key.

Parsers call :func:`target_of` once per record, so it has a fast path for the common
``scheme://host[:port]/path?query`` shape (one regular expression, no
``urllib.parse``) and falls back to ``urlsplit`` for anything unusual (user info, IPv6
literals, blanks, percent signs, odd ports). Both paths give the same result; a property
test holds them equal.

The normalized ``location`` is what fingerprints compare (:mod:`aifr.findings.fingerprint`):
scheme and host lower-cased, a trailing dot on the host dropped, the scheme's default
port dropped, an empty path written ``/``, the fragment dropped; path and query are kept
as written, since servers may treat them case-sensitively. A value that is not a URL
(``host:port``, a bare name) is stripped and lower-cased, with a trailing dot dropped.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import urlsplit

__all__ = ["Target", "normalize_location", "target_of"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}
# scheme://host[:port]/path?query#fragment with a plain host: no user info, IPv6
# literal, percent sign, backslash or blank, which go to urllib's slower, fuller split.
_PLAIN_URL = re.compile(
    r"([A-Za-z]+)://([^/?#@\[\]\\%:\s]+)(?::([0-9]+))?((?:/[^?#]*)?)(?:\?([^#]*))?(?:#.*)?",
    re.DOTALL | re.ASCII,
)


class Target(NamedTuple):
    """The parts of a location; ``location`` is its normalized key (``""`` when empty).

    A named tuple, not a frozen dataclass: it is built once per parsed record, and a
    frozen dataclass pays one ``object.__setattr__`` per field.
    """

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
        return _fast_url(value, text) or _slow_url(value, text) or _plain(text)
    return _plain(text)


def normalize_location(value: str) -> str:
    """The normalized key of a location (see the module docstring)."""
    return target_of(value).location


def _fast_url(value: str, text: str) -> Target | None:
    found = _PLAIN_URL.fullmatch(text)
    if found is None:
        return None
    scheme, name, port_text, path, query = found.groups()
    return _url_target(
        value, scheme.lower(), name, port_text or "", path, query or "", query is not None
    )


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
