"""Scan targets: reading what a user registers, and matching findings and targets to them.

A resource is one of four kinds. What counts as a match, per kind:

- ``host``: the same host name or IP address (case-insensitive, trailing dot ignored);
- ``url``: the same scheme and host, and a path at or below the resource's path
  (``https://a.test/app`` covers ``https://a.test/app/login``, not ``/application``);
- ``cidr``: an IP address (the finding's host or ``ip``) inside the network;
- ``repository``: a location at or below the repository URL.

The first registered resource that matches wins, and more specific kinds are tried
first (url, repository, host, cidr), so a finding links to the narrowest target.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from aifr.errors import FindingsError
from aifr.findings.models import Resource, ResourceKind

__all__ = ["Target", "check_ident", "match_resource", "new_resource", "target_of_url"]

_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*$")
_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")  # the models' Ident pattern
_SPECIFICITY = {
    ResourceKind.URL: 0,
    ResourceKind.REPOSITORY: 1,
    ResourceKind.HOST: 2,
    ResourceKind.CIDR: 3,
}


@dataclass(frozen=True, slots=True)
class Target:
    """Where something was found or is to be scanned: a URL and/or a host and IP."""

    url: str | None = None
    host: str | None = None
    ip: str | None = None


def check_ident(what: str, value: str) -> str:
    """``value`` if it is a valid project, run or resource id (what a user types).

    Raises:
        FindingsError: ``findings.invalid`` naming ``what`` and the rule.
    """
    if not _IDENT.match(value):
        raise FindingsError(
            f"{what} {value!r} is not a valid id: letters, digits and . _ : - only, "
            "starting with a letter or digit, at most 128 characters",
            field=what,
        )
    return value


def _bare_host(value: str) -> str:
    return value.strip().strip("[]").rstrip(".").lower()


def _as_ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not value:
        return None
    try:
        return ipaddress.ip_address(_bare_host(value))
    except ValueError:
        return None


def target_of_url(value: str) -> Target:
    """The target a scanner argument names: a URL, ``host:port``, a bare host or an IP."""
    text = value.strip()
    if "://" in text:
        return Target(url=text, host=urlsplit(text).hostname)
    host = text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    return Target(host=_bare_host(host))


def _url_covers(base: str, url: str) -> bool:
    outer, inner = urlsplit(base), urlsplit(url)
    if (outer.scheme.lower(), outer.hostname, outer.port) != (
        inner.scheme.lower(),
        inner.hostname,
        inner.port,
    ):
        return False
    prefix = outer.path.rstrip("/")
    return inner.path == prefix or inner.path.startswith(prefix + "/") or not prefix


def _matches(resource: Resource, target: Target) -> bool:
    kind = resource.kind
    if kind is ResourceKind.URL:
        return target.url is not None and _url_covers(resource.value, target.url)
    if kind is ResourceKind.REPOSITORY:
        location = (target.url or "").rstrip("/")
        base = resource.value.rstrip("/")
        return bool(location) and (location == base or location.startswith(base + "/"))
    if kind is ResourceKind.HOST:
        names = {_bare_host(h) for h in (target.host, target.ip) if h}
        if target.url:
            names.add(_bare_host(urlsplit(target.url).hostname or ""))
        return _bare_host(resource.value) in names
    network = ipaddress.ip_network(resource.value, strict=False)
    candidates = [target.ip, target.host, urlsplit(target.url).hostname if target.url else None]
    return any((ip := _as_ip(c)) is not None and ip in network for c in candidates)


def match_resource(resources: Sequence[Resource], target: Target) -> Resource | None:
    """The narrowest registered resource covering ``target``, or ``None``."""
    ordered = sorted(resources, key=lambda r: _SPECIFICITY[r.kind])
    return next((r for r in ordered if _matches(r, target)), None)


def _guess_kind(value: str) -> ResourceKind:
    if value.startswith(("git@", "ssh://", "git://")) or value.endswith(".git"):
        return ResourceKind.REPOSITORY
    if "://" in value:
        return ResourceKind.URL
    if "/" in value:
        return ResourceKind.CIDR
    return ResourceKind.HOST


def _checked_value(kind: ResourceKind, value: str) -> str:
    if kind is ResourceKind.CIDR:
        try:
            return str(ipaddress.ip_network(value, strict=False))
        except ValueError as exc:
            raise FindingsError(f"resource {value!r} is not a CIDR network: {exc}") from exc
    if kind is ResourceKind.URL:
        parts = urlsplit(value)
        if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
            raise FindingsError(f"resource {value!r} is not an http(s) URL with a host")
        return value
    if kind is ResourceKind.HOST:
        host = _bare_host(value)
        if _as_ip(host) is None and not _HOST.match(host):
            raise FindingsError(f"resource {value!r} is not a host name or an IP address")
        return host
    return value.rstrip("/")


def new_resource(
    project_id: str, value: str, *, kind: ResourceKind | None = None, name: str | None = None
) -> Resource:
    """A resource to register: the kind guessed from ``value`` unless given, the value checked.

    Raises:
        FindingsError: ``findings.invalid`` naming the value that is not of its kind.
    """
    check_ident("project", project_id)
    text = value.strip()
    if not text:
        raise FindingsError("a resource needs a value (host, URL, CIDR or repository)")
    chosen = kind or _guess_kind(text)
    return Resource(
        id=f"res-{secrets.token_hex(6)}",
        project_id=project_id,
        kind=chosen,
        value=_checked_value(chosen, text),
        name=name,
        created_at=datetime.now(UTC),
    )
