"""io.net.* against a real HTTP server on 127.0.0.1 (private addresses allowed explicitly)."""

from __future__ import annotations

import base64
import datetime
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aifr.errors import ErrorCode, ExecutionError, ExecutionTimeoutError, SandboxRefusalError
from stdlib_kit import Lib, build_lib, serve_http


@pytest.fixture
def base() -> Iterator[str]:
    with serve_http() as url:
        yield url


@pytest.fixture
def lib(tmp_path: Path) -> Lib:
    return build_lib(
        tmp_path / "p",
        net_allow_hosts=["127.0.0.1"],
        net_allow_schemes=["http"],
        net_allow_private=True,
        net_max_response_bytes=100_000,
    )


def test_a_get_to_an_allowed_host_returns_status_headers_and_text(lib: Lib, base: str) -> None:
    out = lib.call("io.net.http_get", {"url": f"{base}/ok"})
    assert (out["status"], out["body"], out["body_encoding"]) == (200, "hello", "text")
    assert out["headers"]["set-cookie"] == "[REDACTED]"
    assert out["redirects"] == []


def test_credential_headers_are_sent_but_redacted_in_the_echo(lib: Lib, base: str) -> None:
    out = lib.call(
        "io.net.http_request",
        {
            "url": f"{base}/echo",
            "method": "POST",
            "headers": {
                "Authorization": "Bearer s3cr3t",
                "X-Api-Key": "k-123",
                "Accept": "application/json",
            },
            "json_body": {"a": 1},
        },
    )
    seen = json.loads(out["body"])
    assert seen["headers"]["Authorization"] == "Bearer s3cr3t"
    assert json.loads(seen["body"]) == {"a": 1}
    assert out["request"]["headers"]["authorization"] == "[REDACTED]"
    assert out["request"]["headers"]["x-api-key"] == "[REDACTED]"
    assert out["request"]["headers"]["accept"] == "application/json"
    assert "s3cr3t" not in json.dumps(out["request"])


def test_the_host_header_names_the_requested_host_not_the_address(
    tmp_path: Path, base: str
) -> None:
    lib = build_lib(
        tmp_path / "p",
        net_allow_hosts=["localhost"],
        net_allow_schemes=["http"],
        net_allow_private=True,
    )
    port = base.rsplit(":", 1)[1]
    out = lib.call("io.net.http_get", {"url": f"http://localhost:{port}/echo"})
    headers = {k.lower(): v for k, v in json.loads(out["body"])["headers"].items()}
    assert headers["host"] == f"localhost:{port}"


def test_redirects_within_allowed_hosts_are_followed_and_listed(lib: Lib, base: str) -> None:
    out = lib.call("io.net.http_get", {"url": f"{base}/redirect?to=/ok"})
    assert out["status"] == 200
    assert out["body"] == "hello"
    assert out["redirects"] == [f"{base}/redirect?to=/ok"]  # as requested, not re-encoded


def test_a_post_answered_with_303_continues_as_a_get(lib: Lib, base: str) -> None:
    out = lib.call(
        "io.net.http_request",
        {
            "url": f"{base}/redirect?to=/echo&status=303",
            "method": "POST",
            "body": "x",
            "follow_redirects": True,
        },
    )
    assert json.loads(out["body"])["method"] == "GET"


def test_redirects_are_not_followed_by_http_request_unless_asked(lib: Lib, base: str) -> None:
    out = lib.call("io.net.http_request", {"url": f"{base}/redirect?to=/ok", "method": "PUT"})
    assert out["status"] == 302


def test_a_head_request_returns_the_status_without_a_body(lib: Lib, base: str) -> None:
    out = lib.call("io.net.http_get", {"url": f"{base}/nope", "method": "HEAD"})
    assert out["status"] == 404
    assert out["size"] == 0


def test_binary_bodies_come_back_as_base64(lib: Lib, base: str) -> None:
    out = lib.call("io.net.http_get", {"url": f"{base}/bin"})
    assert out["body_encoding"] == "base64"
    assert base64.b64decode(out["body"]) == bytes(range(256))


def test_a_server_that_never_answers_times_out_at_the_configured_limit(
    tmp_path: Path, base: str
) -> None:
    lib = build_lib(
        tmp_path / "p",
        net_allow_hosts=["127.0.0.1"],
        net_allow_schemes=["http"],
        net_allow_private=True,
        net_timeout_s=0.5,
    )
    with pytest.raises(ExecutionTimeoutError) as caught:
        lib.call("io.net.http_get", {"url": f"{base}/stall"})
    assert caught.value.code is ErrorCode.EXECUTION_TIMEOUT
    assert lib.call("io.net.http_get", {"url": f"{base}/stall-answers"})["body"] == "0"


def test_a_shorter_per_call_timeout_bounds_the_wait_for_an_answer(
    tmp_path: Path, base: str
) -> None:
    lib = build_lib(
        tmp_path / "p",
        net_allow_hosts=["127.0.0.1"],
        net_allow_schemes=["http"],
        net_allow_private=True,
        net_timeout_s=30,  # longer than /stall holds its answer back
    )
    with pytest.raises(ExecutionTimeoutError):
        lib.call("io.net.http_request", {"url": f"{base}/stall", "timeout_s": 0.5})
    answered = lib.call("io.net.http_get", {"url": f"{base}/stall-answers"})
    assert answered["body"] == "0"  # it gave up while the server was still holding back


def test_a_body_that_trickles_in_past_the_timeout_is_cut_off(lib: Lib, base: str) -> None:
    with pytest.raises(ExecutionTimeoutError):  # every byte is on time; the whole body is not
        lib.call("io.net.http_get", {"url": f"{base}/drip", "timeout_s": 0.5})


def test_credential_headers_are_not_carried_to_another_origin_on_redirect(
    tmp_path: Path, base: str
) -> None:
    lib = build_lib(
        tmp_path / "p",
        net_allow_hosts=["127.0.0.1", "localhost"],
        net_allow_schemes=["http"],
        net_allow_private=True,
    )
    port = base.rsplit(":", 1)[1]
    out = lib.call(
        "io.net.http_get",
        {
            "url": f"{base}/redirect?to=http://localhost:{port}/echo",
            "headers": {"Authorization": "Bearer s3cr3t", "X-Api-Key": "k-1", "Accept": "*/*"},
        },
    )
    sent = {k.lower() for k in json.loads(out["body"])["headers"]}
    assert "accept" in sent
    assert not sent & {"authorization", "x-api-key"}


def test_credential_headers_follow_a_redirect_on_the_same_origin(lib: Lib, base: str) -> None:
    out = lib.call(
        "io.net.http_get",
        {"url": f"{base}/redirect?to=/echo", "headers": {"X-Api-Key": "k-1"}},
    )
    assert json.loads(out["body"])["headers"]["X-Api-Key"] == "k-1"


@pytest.mark.parametrize(
    ("url", "headers", "rule"),
    [
        ("http://127.0.0.1/x?token=s3cr3t", {"Host": "other"}, "header_not_allowed"),
        ("http://u:s3cr3t@[::1/x?token=s3cr3t", {}, "invalid_url"),
    ],
)
def test_a_refused_url_is_named_without_its_credentials(
    lib: Lib, url: str, headers: dict[str, str], rule: str
) -> None:
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("io.net.http_get", {"url": url, "headers": headers})
    assert caught.value.rule == rule
    assert "s3cr3t" not in caught.value.message
    assert "s3cr3t" not in json.dumps(caught.value.details)


def test_a_caller_may_not_set_the_host_header(lib: Lib, base: str) -> None:
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("io.net.http_get", {"url": f"{base}/ok", "headers": {"Host": "metadata.internal"}})
    assert caught.value.rule == "header_not_allowed"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Note": "caf\u00e9"},
        {"X-Note": "a\r\nHost: metadata.internal"},
        {"X-Note": "a\nb"},
        {"X-Note\r\nHost": "a"},
        {"Bad Name": "a"},
        {"X-Token": "s3cr3t\r\n"},
    ],
)
def test_header_names_and_values_http_cannot_carry_are_refused(
    lib: Lib, base: str, headers: dict[str, str]
) -> None:
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("io.net.http_get", {"url": f"{base}/echo", "headers": headers})
    assert caught.value.rule == "header_not_allowed"
    assert "s3cr3t" not in caught.value.message


@pytest.mark.parametrize("charset", ["rot13", "hex", "no-such-codec"])
def test_a_charset_that_is_no_text_encoding_falls_back_to_utf8(
    lib: Lib, base: str, charset: str
) -> None:
    out = lib.call("io.net.http_get", {"url": f"{base}/charset?c={charset}"})
    assert out["body"] == "hello"


def test_a_smaller_per_call_cap_applies(lib: Lib, base: str) -> None:
    with pytest.raises(SandboxRefusalError) as caught:
        lib.call("io.net.http_get", {"url": f"{base}/big?n=5000", "max_bytes": 1000})
    assert caught.value.rule == "response_too_large"


def test_urls_with_passwords_are_redacted_in_the_output(lib: Lib, base: str) -> None:
    authed = base.replace("http://", "http://user:pw@")
    out = lib.call("io.net.http_get", {"url": f"{authed}/echo?api_key=abc&q=1"})
    headers = {k.lower(): v for k, v in json.loads(out["body"])["headers"].items()}
    assert headers["authorization"].startswith("Basic ")
    assert "pw" not in out["url"].split("@")[0].split(":", 2)[-1]
    assert "abc" not in out["url"]
    assert "q=1" in out["url"]


def test_an_idempotency_key_is_sent_and_a_repeat_returns_the_recorded_response(
    lib: Lib, base: str
) -> None:
    echoed = lib.call("io.net.http_request", {"url": f"{base}/echo", "method": "POST"}, key="pay-1")
    headers = {k.lower(): v for k, v in json.loads(echoed["body"])["headers"].items()}
    assert headers["idempotency-key"] == "pay-1"
    first = lib.call("io.net.http_request", {"url": f"{base}/count", "method": "POST"}, key="pay-2")
    second = lib.call(
        "io.net.http_request", {"url": f"{base}/count", "method": "POST"}, key="pay-2"
    )
    third = lib.call("io.net.http_request", {"url": f"{base}/count", "method": "POST"}, key="pay-3")
    assert (first["body"], second["body"], third["body"]) == ("1", "1", "2")


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_tls_certificates_are_verified(tmp_path: Path) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        lib = build_lib(tmp_path / "p", net_allow_hosts=["localhost"], net_allow_private=True)
        with pytest.raises(ExecutionError) as caught:
            lib.call("io.net.http_get", {"url": f"https://localhost:{server.server_address[1]}/"})
        assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
