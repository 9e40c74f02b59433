"""The network guard: allowlists, address vetting and credential redaction for ``io.net``.

A URL passes when its scheme and host are allowlisted (exact names or ``*.example.com``)
and every address its host resolves to is public: loopback, private, link-local,
shared, reserved and multicast ranges are refused unless ``allow_private``, cloud
metadata addresses always are, and an IPv6 address carrying an IPv4 one (mapped, NAT64,
6to4, Teredo) is judged by the IPv4 inside. The vetted addresses are handed to the
caller, which connects to them and never resolves the host again.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import JsonValue

from aifr.errors import ExecutionError, SandboxRefusalError
from aifr.redaction import is_secret_key
from aifr.redaction import redact_url as shown_url
from aifr.stdlib.permissions import PermissionTable

if TYPE_CHECKING:
    import httpx

__all__ = [
    "REDACTED",
    "NetGuard",
    "Vetted",
    "is_credential_header",
    "is_loopback",
    "redact_headers",
    "redact_url",
    "refuse_url",
]

REDACTED = "[REDACTED]"
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address, IPv6 with or without brackets) is this machine."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_credential_header(name: str) -> bool:
    """Whether a header (or query parameter) name says it carries a credential."""
    return is_secret_key(name)


def redact_headers(headers: httpx.Headers | dict[str, str]) -> dict[str, str]:
    """Headers with the value of every credential-looking header replaced."""
    return {
        name.lower(): (REDACTED if is_secret_key(name) else value)
        for name, value in headers.items()
    }


def redact_url(url: httpx.URL | str) -> str:
    """``url`` as errors and echoes show it: ``user:***@``, ``?token=***`` (``aifr.redaction``).

    A URL that did not parse goes through the same rule as written.
    """
    return shown_url(str(url))


@dataclass(frozen=True, slots=True)
class Vetted:
    """A URL that passed every check, with the addresses it may be sent to (in order)."""

    url: httpx.URL
    host: str
    addresses: tuple[str, ...]


def refuse_url(rule: str, url: str, why: str, **details: JsonValue) -> SandboxRefusalError:
    """The refusal of a request to ``url`` under ``rule``."""
    return SandboxRefusalError(
        f"request to {url!r} refused ({rule}): {why}", rule=rule, url=url, **details
    )


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
    return address


def _is_public(address: IPAddress) -> bool:
    return address.is_global and not address.is_multicast


class NetGuard:
    """The allowlists and address rules every hop must pass."""

    def __init__(
        self,
        *,
        allow_hosts: Sequence[str],
        allow_schemes: Sequence[str],
        allow_private: bool,
        permissions: PermissionTable | None = None,
    ) -> None:
        self.permissions = permissions
        self.allow_hosts = tuple(h.lower().rstrip(".") for h in allow_hosts)
        self.allow_schemes = tuple(
            s.lower() for s in allow_schemes if s.lower() in ("http", "https")
        )
        self.allow_private = allow_private

    def host_allowed(self, host: str) -> bool:
        """Whether ``host`` is listed exactly or under a ``*.domain`` wildcard."""
        for pattern in self.allow_hosts:
            if pattern == host:
                return True
            if pattern.startswith("*.") and host.endswith(pattern[1:]):
                return True
        return False

    def vet(self, url: httpx.URL) -> Vetted:
        """Check ``url`` and resolve it to the addresses it may be sent to.

        Raises:
            SandboxRefusalError: ``scheme_not_allowed``, ``host_not_allowed`` or
                ``private_address_refused``.
            PluginPermissionError: the current principal is a plugin that did not ask
                for the host.
            ExecutionError: the host does not resolve.
        """
        shown = redact_url(url)
        if url.scheme not in self.allow_schemes:
            raise refuse_url(
                "scheme_not_allowed", shown, f"scheme {url.scheme!r} is not allowlisted"
            )
        host = url.host.lower().rstrip(".")
        if not host or not self.host_allowed(host):
            raise refuse_url(
                "host_not_allowed", shown, f"host {host!r} is not allowlisted", host=host
            )
        if self.permissions is not None:
            self.permissions.check_host(host)
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = self._resolve(host, port, shown)
        for address in {a for found in addresses for a in (found, _embedded(found))}:
            if address in _METADATA:
                raise refuse_url(
                    "private_address_refused", shown, f"{address} is a metadata endpoint"
                )
            if not self.allow_private and not _is_public(address):
                raise refuse_url(
                    "private_address_refused", shown, f"{host!r} resolves to non-public {address}"
                )
        return Vetted(url=url, host=host, addresses=tuple(dict.fromkeys(str(a) for a in addresses)))

    def vet_host(self, scheme: str, host: str, port: int) -> tuple[str, ...]:
        """The vetted addresses for ``host:port`` over ``scheme`` (the egress proxy's check).

        Raises:
            SandboxRefusalError: as :meth:`vet`.
            ExecutionError: the host does not resolve.
        """
        import httpx  # heavy; loaded on the first proxied connection

        shown = f"[{host}]" if ":" in host else host
        return self.vet(httpx.URL(f"{scheme}://{shown}:{port}/")).addresses

    @staticmethod
    def _resolve(host: str, port: int, shown: str) -> list[IPAddress]:
        with contextlib.suppress(ValueError):
            return [ipaddress.ip_address(host)]
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise ExecutionError(f"cannot resolve {host!r} for {shown}: {exc}", host=host) from None
        found = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        if not found:
            raise ExecutionError(f"{host!r} has no addresses", host=host)
        return found
