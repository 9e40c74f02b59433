"""TLS 1.3 only with exactly three suites (``aifr serve`` and ``aifr mcp``), and the rate limit."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_harness import Server, make_project, mint, run_aifr, start_server

from aifr.api import TLS13_SUITES

ACCEPTED = list(TLS13_SUITES)


@pytest.fixture(scope="module")
def tls_server(
    aifr_bin: str, tmp_path_factory: pytest.TempPathFactory, api_env: dict[str, str]
) -> Iterator[Server]:
    """``aifr serve`` over HTTPS with a dev pair, and a small per-token rate (0.2/s, burst 3)."""
    project = make_project(
        aifr_bin,
        tmp_path_factory.mktemp("tls"),
        api_env,
        extra_toml="\n[api]\nrate_per_s = 0.2\nburst = 3\n",
    )
    made = run_aifr(aifr_bin, "certs", "dev", "-p", str(project), cwd=project, env=api_env)
    assert made.returncode == 0, made.stderr
    tls = project / ".aifr" / "tls"
    running = start_server(
        aifr_bin,
        project,
        api_env,
        "--tls-cert",
        str(tls / "dev-cert.pem"),
        "--tls-key",
        str(tls / "dev-key.pem"),
    )
    running.tokens = {"agent": mint(aifr_bin, project, api_env, "agent")}
    yield running
    running.stop()
    print(running.stderr)


def _cert(server: Server) -> Path:
    return server.log.parent / ".aifr" / "tls" / "dev-cert.pem"


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def test_certs_dev_writes_a_private_key_and_the_server_speaks_https(tls_server: Server) -> None:
    key = tls_server.log.parent / ".aifr" / "tls" / "dev-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert tls_server.url.startswith("https://127.0.0.1:")
    with httpx.Client(
        base_url=tls_server.url, verify=ssl.create_default_context(cafile=_cert(tls_server))
    ) as client:
        response = client.get("/health")
    assert response.status_code == 200
    context = ssl.create_default_context(cafile=_cert(tls_server))
    with (
        socket.create_connection(("127.0.0.1", _port(tls_server)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as wrapped,
    ):
        assert wrapped.version() == "TLSv1.3"
        assert wrapped.cipher()[0] in ACCEPTED


def test_a_tls_1_2_handshake_is_refused(tls_server: Server) -> None:
    context = ssl.create_default_context(cafile=_cert(tls_server))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        pytest.raises(httpx.ConnectError),
        httpx.Client(base_url=tls_server.url, verify=context) as client,
    ):
        client.get("/health")


def _s_client(port: int, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief", *options],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize("suite", ACCEPTED)
def test_each_of_the_three_tls_1_3_suites_is_accepted(tls_server: Server, suite: str) -> None:
    result = _s_client(_port(tls_server), "-tls1_3", "-ciphersuites", suite)
    assert "Protocol version: TLSv1.3" in result.stderr, result.stderr
    assert f"Ciphersuite: {suite}" in result.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_another_tls_1_3_suite_and_tls_1_2_are_refused_by_openssl(tls_server: Server) -> None:
    ccm = _s_client(_port(tls_server), "-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_SHA256")
    old = _s_client(_port(tls_server), "-tls1_2")
    assert "Ciphersuite:" not in ccm.stderr
    assert "Protocol version: TLSv1.2" not in old.stderr
    assert old.returncode != 0


def test_a_token_past_its_rate_gets_429_with_retry_after(tls_server: Server) -> None:
    verify = ssl.create_default_context(cafile=_cert(tls_server))
    with tls_server.client("agent", verify=verify) as client:
        answers = [client.get("/ready") for _ in range(4)]
        assert client.get("/health").status_code == 200  # health is never limited
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    limited = answers[-1]
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["code"] == "transport.rate_limited"
    assert int(limited.headers["retry-after"]) >= 1


def test_mcp_over_http_speaks_tls_1_3_only_with_the_same_pair(
    tls_server: Server, aifr_bin: str, api_env: dict[str, str]
) -> None:
    project = tls_server.log.parent
    tls = project / ".aifr" / "tls"
    log = project / ".mcp-tls.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [
                aifr_bin,
                "mcp",
                "--transport",
                "http",
                "--port",
                "0",
                "-p",
                str(project),
                "--tls-cert",
                str(tls / "dev-cert.pem"),
                "--tls-key",
                str(tls / "dev-key.pem"),
            ],
            cwd=project,
            env=api_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        url = _wait_for_url(process, log)
        assert url.startswith("https://")
        port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        assert "Protocol version: TLSv1.3" in _s_client(port, "-tls1_3").stderr
        context = ssl.create_default_context(cafile=tls / "dev-cert.pem")
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(httpx.ConnectError), httpx.Client(verify=context) as client:
            client.post(url, json={})
        modern = ssl.create_default_context(cafile=tls / "dev-cert.pem")
        with httpx.Client(verify=modern) as client:
            assert client.post(url, json={}).status_code == 401  # TLS passed; no token
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for_url(process: subprocess.Popen[bytes], log: Path) -> str:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        for line in log.read_text(errors="replace").splitlines():
            if "serving on " in line:
                return line.split("serving on ", 1)[1].strip()
        time.sleep(0.02)  # polling the log for a condition, bounded by the deadline
    raise AssertionError(f"aifr mcp never said where it listens: {log.read_text()}")
