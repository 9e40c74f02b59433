"""``aifr doctor``'s rows for plugins and the TLS pair, and the row type all checks return.

Each check returns rows and never raises: a plugin that fails to import must not hide
an expired certificate.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from aifr.app import build_registry_and_plugins
from aifr.config import Settings
from aifr.errors import AifrError, ErrorCode
from aifr.plugins import PluginReport, PluginState

__all__ = ["Check", "check_plugins", "check_tls"]

_EXPIRY_WARNING_DAYS = 14
_HANDSHAKE_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Check:
    """One row of the report: what was checked, whether it passed, and how to fix it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


# -- plugins -------------------------------------------------------------------------------


def check_plugins(settings: Settings) -> list[Check]:
    """One row per plugin ``[plugins] enabled`` names: it loads, or why not.

    Loading is the real thing (the entry point is imported and its capabilities are
    registered into a scratch registry), so a row passes only when ``aifr call`` would
    find the plugin's capabilities.
    """
    chosen = settings.plugins
    if not chosen.enabled:
        return [Check("plugins", True, "none enabled ([plugins] enabled)")]
    try:
        _, plugins = build_registry_and_plugins(settings)
    except AifrError as exc:
        return [
            Check(
                "plugins",
                False,
                f"{exc.code.value}: {exc.message}",
                "fix the project's capability modules first (see the policy files row)",
            )
        ]
    rows = [_plugin_row(report) for report in plugins.reports]
    return rows or [Check("plugins", True, "none enabled ([plugins] enabled)")]


def _plugin_row(report: PluginReport) -> Check:
    name = f"plugin {report.name}"
    version = f" {report.version}" if report.version else ""
    if report.state is PluginState.LOADED:
        caps = ", ".join(report.capabilities) or "no capabilities"
        return Check(name, True, f"loaded{version}: {caps}")
    if report.state is PluginState.DISABLED:
        return Check(name, True, f"disabled: {report.reason or '[plugins] disabled'}")
    return Check(name, False, report.reason or "broken", _plugin_fix(report))


def _plugin_fix(report: PluginReport) -> str:
    code = report.error.code if report.error is not None else None
    if code is ErrorCode.PLUGIN_NOT_FOUND:
        return (
            f"pip install the package providing {report.name!r} (entry point group "
            "aifr.plugins), or remove it from [plugins] enabled"
        )
    if code is ErrorCode.PLUGIN_VERSION_UNSUPPORTED:
        return "install a plugin version made for this aifr, or upgrade aifr"
    return (
        f"see `aifr plugins show {report.name}`; reinstall or fix the plugin, or add it to "
        "[plugins] disabled"
    )


# -- TLS -----------------------------------------------------------------------------------


def check_tls(settings: Settings) -> list[Check]:
    """The ``[api]`` TLS pair: readable, a matching pair, in date, and it speaks TLS 1.3.

    The last is proven with a real handshake on the loopback interface: a server
    context made as ``aifr serve`` makes it, and a TLS 1.3-only client.
    """
    api = settings.api
    if api.tls_cert is None and api.tls_key is None:
        return [Check("TLS files", True, "not configured ([api] tls_cert, tls_key)")]
    if api.tls_cert is None or api.tls_key is None:
        missing = "tls_cert" if api.tls_cert is None else "tls_key"
        return [
            Check(
                "TLS files",
                False,
                f"[api] {missing} is not set: a certificate needs its key and the other way round",
                f"set [api] {missing}, or `aifr certs dev` for a pair to try on this machine",
            )
        ]
    cert_path, key_path = settings.path(api.tls_cert), settings.path(api.tls_key)
    problem = _tls_problem(cert_path, key_path)
    if problem is not None:
        detail, fix = problem
        return [Check("TLS files", False, detail, fix)]
    return [Check("TLS files", True, _tls_summary(cert_path))]


def _tls_problem(cert_path: Path, key_path: Path) -> tuple[str, str] | None:
    """What is wrong with the pair, with its fix; ``None`` when it serves TLS 1.3."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    renew = (
        "renew the certificate (`aifr certs dev` for a local one) and point [api] tls_cert at it"
    )
    try:
        cert_bytes, key_bytes = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as exc:
        what = cert_path if exc.filename == str(cert_path) else key_path
        return (
            f"cannot read {what}: {exc.strerror}",
            f"correct the path in [api], or make {what} readable by this user",
        )
    try:
        certificate = x509.load_pem_x509_certificate(cert_bytes)
    except ValueError as exc:
        return f"{cert_path} is not a PEM certificate: {exc}", renew
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError) as exc:
        return (
            f"{key_path} is not an unencrypted PEM private key: {exc}",
            "point [api] tls_key at the certificate's key (PEM, without a passphrase)",
        )
    public = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(*public) != key.public_key().public_bytes(*public):
        return (
            f"{key_path} is not the key of {cert_path}",
            "point [api] tls_key at the key the certificate was issued for",
        )
    now = datetime.datetime.now(datetime.UTC)
    if certificate.not_valid_after_utc <= now:
        return f"{cert_path} expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC", renew
    if certificate.not_valid_before_utc > now:
        return (
            f"{cert_path} is not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            "check this machine's clock, or issue a certificate valid from now",
        )
    return _handshake_problem(cert_path, key_path)


def _handshake_problem(cert_path: Path, key_path: Path) -> tuple[str, str] | None:
    """A TLS 1.3 handshake over loopback with the pair, as ``aifr serve`` would serve it."""
    from aifr.api.tls import server_context  # the api layer's own context

    try:
        server = server_context(cert_path, key_path)
    except AifrError as exc:
        return exc.message, "use a pair and an OpenSSL that serve TLS 1.3 (see docs/api.md)"
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE  # the pair's own validity is checked above
    failure: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(_HANDSHAKE_TIMEOUT_S)
        port = listener.getsockname()[1]

        def accept() -> None:
            try:
                conn, _ = listener.accept()
                with server.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError) as exc:
                failure.append(str(exc))

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=_HANDSHAKE_TIMEOUT_S) as raw,
                client.wrap_socket(raw) as tls,
            ):
                version = tls.version()
        except (OSError, ssl.SSLError) as exc:
            version = None
            failure.append(str(exc))
        thread.join(_HANDSHAKE_TIMEOUT_S)
    if version != "TLSv1.3":
        return (
            f"a TLS 1.3 handshake with {cert_path} failed: {'; '.join(failure) or version}",
            "use an RSA (2048+), ECDSA or Ed25519 key and an OpenSSL with TLS 1.3",
        )
    return None


def _tls_summary(cert_path: Path) -> str:
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    left = certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    subject = certificate.subject.rfc4514_string() or "(no subject)"
    soon = " (renew soon)" if left.days < _EXPIRY_WARNING_DAYS else ""
    return (
        f"{cert_path}: {subject}, key matches, TLS 1.3 handshake ok, "
        f"expires {certificate.not_valid_after_utc:%Y-%m-%d} ({left.days} days){soon}"
    )
