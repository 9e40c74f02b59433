"""TLS for every HTTP surface: TLS 1.3 only, with exactly three cipher suites.

Seed 004's security defaults: with a certificate, a server speaks TLS 1.3 and nothing
older (a TLS 1.2 client's handshake fails), with the suites ``TLS_AES_256_GCM_SHA384``,
``TLS_CHACHA20_POLY1305_SHA256`` and ``TLS_AES_128_GCM_SHA256``. Python's ``ssl`` has no
call to choose TLS 1.3 suites; OpenSSL's TLS 1.3 default is exactly these three, and
:func:`server_context` checks that it is, refusing to start otherwise.

:func:`write_dev_certificate` writes a self-signed pair for trying it on this machine.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from aifr.errors import ConfigError

__all__ = ["TLS13_SUITES", "harden", "server_context", "write_dev_certificate"]

TLS13_SUITES = ("TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256")


def harden(context: ssl.SSLContext) -> ssl.SSLContext:
    """Restrict ``context`` to TLS 1.3 and check its suites are exactly :data:`TLS13_SUITES`.

    Raises:
        ConfigError: this OpenSSL offers other TLS 1.3 suites than the three.
    """
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    offered = {c["name"] for c in context.get_ciphers() if c.get("protocol") == "TLSv1.3"}
    if offered != set(TLS13_SUITES):
        raise ConfigError(
            f"this OpenSSL offers TLS 1.3 suites {sorted(offered)}, not exactly "
            f"{list(TLS13_SUITES)}; aifr refuses to serve TLS with other suites",
            offered=sorted(offered),
        )
    return context


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS 1.3-only server context for ``cert`` and ``key`` (PEM files).

    Raises:
        ConfigError: a file is missing or unreadable, the pair does not match, or the
            suites are not the three of :data:`TLS13_SUITES`.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for what, path in (("certificate", cert), ("key", key)):
        if not path.is_file():
            raise ConfigError(f"TLS {what} {path} does not exist", file=str(path))
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"cannot load the TLS pair {cert} / {key}: {exc}", file=str(cert)
        ) from exc
    return harden(context)


def write_dev_certificate(
    directory: Path, *, host: str = "localhost", days: int = 30
) -> tuple[Path, Path]:
    """Write a self-signed certificate and its key (``dev-cert.pem``, ``dev-key.pem``).

    The certificate names ``host``, ``localhost``, ``127.0.0.1`` and ``::1``; the key
    file is mode 0600. For trying TLS on this machine only: no client trusts it unless
    told to (``curl --cacert dev-cert.pem``).

    Raises:
        ConfigError: the files cannot be written.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys((host, "localhost"))]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "dev-cert.pem", directory / "dev-key.pem"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
    except OSError as exc:
        raise ConfigError(f"cannot write the TLS pair in {directory}: {exc.strerror}") from exc
    return cert_path, key_path
