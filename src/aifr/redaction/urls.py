"""Secrets in URLs: the password of the user info and secret-named query values.

One rule for every place a URL is shown (``io.net`` errors and echoes, ``sys.env.read``,
audit sinks' names, audit details, logs): the user name, host, path and every other
parameter stay as written, byte for byte; the password and each value whose name is a
secret (``is_secret_key``) become ``***``. Nothing is re-encoded, so the marker never
turns into ``%2A%2A%2A`` and a URL that was copyable stays copyable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import unquote

from aifr.redaction.rules import QUICK_RULES, is_secret_key

__all__ = ["URL_MARK", "redact_url", "url_secret_spans"]

URL_MARK = "***"

URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s<>\"'`]+")
_PARAM = re.compile(r"([^=&;#?]*)=([^&;#]*)")
_ONE_SLASH_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/+")
"""``postgres:/`` where ``postgres://`` was meant: the typo must not show the password."""


def url_secret_spans(url: str, offset: int = 0) -> Iterator[tuple[str, int, int]]:
    """``(type, start, end)`` of each secret in ``url`` (one URL, no surrounding text)."""
    scheme_end = url.find("://")
    if scheme_end >= 0:
        start = scheme_end + 3
    else:
        typo = _ONE_SLASH_SCHEME.match(url)
        start = typo.end() if typo else 0
    authority_end = len(url)
    for stop in "/?#":
        found = url.find(stop, start)
        if found != -1:
            authority_end = min(authority_end, found)
    at = url.rfind("@", start, authority_end)
    if at != -1:
        colon = url.find(":", start, at)
        if colon != -1 and colon + 1 < at:
            yield "url_password", offset + colon + 1, offset + at
        elif colon == -1 and any(rule.fullmatch(url, start, at) for _, rule in QUICK_RULES):
            yield "url_password", offset + start, offset + at  # a token as user name
    query = url.find("?", authority_end)
    fragment = url.find("#", authority_end)
    for part_start in (query, fragment):
        if part_start == -1:
            continue
        part_end = len(url)
        if part_start == query and fragment > query:
            part_end = fragment
        for match in _PARAM.finditer(url, part_start + 1, part_end):
            name, value = match.group(1), match.group(2)
            if value and is_secret_key(unquote(name)):
                yield "url_query_secret", offset + match.start(2), offset + match.end(2)


def redact_url(url: str) -> str:
    """``url`` with its password and secret-named query values shown as ``***``.

    ``https://user:pw@host/?api_key=K&page=2`` becomes
    ``https://user:***@host/?api_key=***&page=2``; a URL without secrets comes back as
    given.
    """
    spans = list(url_secret_spans(url))
    if not spans:
        return url
    pieces: list[str] = []
    cursor = 0
    for _kind, start, end in spans:
        pieces.append(url[cursor:start])
        pieces.append(URL_MARK)
        cursor = end
    pieces.append(url[cursor:])
    return "".join(pieces)
