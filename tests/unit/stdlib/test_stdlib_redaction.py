"""Secret masking for sys.env.read and credential redaction for io.net echoes."""

from __future__ import annotations

import httpx
import pytest

from aifr.stdlib import NetGuard, is_secret_like, mask_value, redact_headers, redact_url


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GITHUB_TOKEN", "anything"),
        ("DB_PASSWORD", "hunter2"),
        ("AWS_SECRET_ACCESS_KEY", "x"),
        ("STRIPE_KEY", "x"),
        ("SOMETHING", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"),
        ("SOMETHING", "AKIAABCDEFGHIJKLMNOP"),
        ("SOMETHING", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        ("SOMETHING", "sk-proj-abcdefghijklmnop"),
        ("SOMETHING", "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8"),
    ],
)
def test_secret_looking_variables_are_masked(name: str, value: str) -> None:
    assert is_secret_like(name, value)
    assert mask_value(name, value) == "****"


@pytest.mark.parametrize(
    ("name", "value"),
    [("HOME", "/root"), ("LANG", "C.UTF-8"), ("PATH", "/usr/bin:/bin"), ("MONKEY", "banana")],
)
def test_ordinary_variables_are_shown(name: str, value: str) -> None:
    assert mask_value(name, value) == value


def test_a_url_keeps_everything_but_its_password() -> None:
    assert mask_value("REDIS_URL", "redis://:pw@cache:6379/0") == "redis://:***@cache:6379/0"


def test_a_url_whose_port_does_not_parse_still_loses_only_its_password() -> None:
    shown = mask_value("DATABASE_URL", "postgres://u:p4ss@db:99999/app")
    assert shown == "postgres://u:***@db:99999/app"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_PASS", "hunter2"),
        ("MYSQL_PWD", "hunter2"),
        ("RABBITMQ_DEFAULT_PASS", "hunter2"),
        ("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T000/B000/XXXXXXXX"),
    ],
)
def test_passwords_and_webhooks_are_masked_whole(name: str, value: str) -> None:
    assert mask_value(name, value) == "****"


@pytest.mark.parametrize(("name", "value"), [("PWD", "/srv/app"), ("OLDPWD", "/root")])
def test_the_shells_working_directories_are_no_passwords(name: str, value: str) -> None:
    assert mask_value(name, value) == value


def test_a_url_loses_its_credential_query_values_and_keeps_the_rest() -> None:
    shown = mask_value(
        "STORAGE_URL", "https://acct.blob.example/c/f?sv=2024&sig=s3cr3t&page=2&api_key=k"
    )
    assert "s3cr3t" not in shown and "=k" not in shown
    assert shown == "https://acct.blob.example/c/f?sv=2024&sig=***&page=2&api_key=***"


def test_credential_headers_are_redacted() -> None:
    shown = redact_headers(
        {"Authorization": "Bearer x", "Cookie": "a=b", "X-Auth-Token": "t", "Accept": "*/*"}
    )
    assert shown == {
        "authorization": "[REDACTED]",
        "cookie": "[REDACTED]",
        "x-auth-token": "[REDACTED]",
        "accept": "*/*",
    }


def test_urls_lose_passwords_and_credential_query_values() -> None:
    shown = redact_url(httpx.URL("https://u:p4ss@h.example/x?token=abc&page=2"))
    assert "p4ss" not in shown
    assert "abc" not in shown
    assert "page=2" in shown


def test_wildcards_match_subdomains_only() -> None:
    guard = NetGuard(
        allow_hosts=["*.example.com", "api.test"], allow_schemes=["https"], allow_private=False
    )
    assert guard.host_allowed("a.example.com")
    assert guard.host_allowed("a.b.example.com")
    assert not guard.host_allowed("example.com")
    assert not guard.host_allowed("evilexample.com")
    assert not guard.host_allowed("example.com.evil.net")
    assert guard.host_allowed("api.test")
    assert not guard.host_allowed("x.api.test")


def test_only_http_and_https_can_be_allowed() -> None:
    guard = NetGuard(allow_hosts=["h"], allow_schemes=["HTTPS", "file", "ftp"], allow_private=False)
    assert guard.allow_schemes == ("https",)
