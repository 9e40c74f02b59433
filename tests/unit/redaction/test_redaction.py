"""The one secret detector: typed findings, placeholders, counts, keys and URLs."""

from __future__ import annotations

import pytest

from aifr.redaction import detect, is_secret_key, redact_text, redact_url, scrub

# One table for every place a URL is shown (errors, audit details, logs, sinks, env).
URLS = [
    ("https://user:pw@host/?api_key=K", "https://user:***@host/?api_key=***"),
    ("https://host/x?page=2", "https://host/x?page=2"),
    ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
    ("postgres://app:s3cret@db:5432/x", "postgres://app:***@db:5432/x"),
    ("nats://user@host:4222", "nats://user@host:4222"),
    (
        "https://acct.blob.example/c/f?sv=2024&sig=s3cr3t&page=2&api_key=k",
        "https://acct.blob.example/c/f?sv=2024&sig=***&page=2&api_key=***",
    ),
    ("https://h/cb#access_token=abc&state=1", "https://h/cb#access_token=***&state=1"),
    ("https://h/?q=a%20b&Token=x%2Fy", "https://h/?q=a%20b&Token=***"),
    ("https://u:p@[::1]:8080/p", "https://u:***@[::1]:8080/p"),
    ("https://u:p4ss@h:99999/app", "https://u:***@h:99999/app"),  # a port that does not parse
    ("https://ghp_" + "a" * 36 + "@github.com/o/r", "https://***@github.com/o/r"),
]


@pytest.mark.parametrize(("url", "shown"), URLS)
def test_a_url_keeps_its_user_name_and_shows_one_readable_marker(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "%2A" not in redact_url(url) and "%5B" not in redact_url(url)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgres:/alice:s3cret@db/x", "postgres:/alice:***@db/x"),
        ("postgresql:alice:s3cret@db/x", "postgresql:***@db/x"),  # more hidden, not less
        ("alice:s3cret@db", "alice:***@db"),
    ],
)
def test_a_url_missing_a_slash_still_hides_its_password(url: str, shown: str) -> None:
    """A typo'd ``database_url`` is echoed in the error that refuses it."""
    assert redact_url(url) == shown


@pytest.mark.parametrize(("url", "shown"), URLS)
def test_a_url_inside_text_is_redacted_by_the_same_rule(url: str, shown: str) -> None:
    assert scrub(f"failed: {url} (retry)") == f"failed: {shown} (retry)"
    assert redact_text(f"failed: {url} (retry)").text == f"failed: {shown} (retry)"


SECRETS = [
    ("aws_access_key", "AKIAIOSFODNN7EXAMPLE"),
    ("github_token", "ghp_" + "a1B2" * 9),
    ("slack_token", "xoxb-1234567890-abcdefghij"),
    ("openai_key", "sk-" + "A" * 32),
    ("stripe_key", "sk_live_" + "0" * 24),
    ("google_api_key", "AIza" + "B" * 35),
    ("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlF"),
    ("private_key", "-----BEGIN RSA PRIVATE KEY-----\nMIIEvQ\n-----END RSA PRIVATE KEY-----"),
    ("authorization", "Bearer abcdefghijklmnopqrstuvwxyz012345"),
    ("gitlab_token", "glpat-abcdefghij1234567890"),
    ("sendgrid_api_key", "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"),
    ("high_entropy_string", "Zx9Qm2Lr8Tv4Wb7Nc1Kd6Hf3Js5Gp0Ya"),
]


@pytest.mark.parametrize(("kind", "secret"), SECRETS)
def test_each_secret_type_is_found_with_its_span_and_replaced_by_a_typed_placeholder(
    kind: str, secret: str
) -> None:
    text = f"config line: {secret} end"
    found = detect(text)
    assert [(m.type, text[m.start : m.end]) for m in found] == [(kind, secret)]
    redacted = redact_text(text)
    assert redacted.text == f"config line: [REDACTED:{kind}] end"
    assert redacted.counts == {kind: 1}


def test_passwords_in_config_lines_are_found_and_indirect_references_are_not() -> None:
    text = "[db]\npassword = hunter2\nuser = app\napi_key: 'k3y-value'\npwd = get_password()\n"
    redacted = redact_text(text)
    assert "hunter2" not in redacted.text and "k3y-value" not in redacted.text
    assert "user = app" in redacted.text and "get_password()" in redacted.text
    assert redacted.counts == {"secret_assignment": 2}
    assert redacted.total == 2


def test_counts_are_kept_per_type() -> None:
    text = "AKIAIOSFODNN7EXAMPLE and AKIAIOSFODNN7EXAMPLF and https://u:pw@h/"
    assert redact_text(text).counts == {"aws_access_key": 2, "url_password": 1}


@pytest.mark.parametrize(
    "text",
    [
        "/work/wt/h21-defects/src/aifr/redaction/detector.py",
        "the quick brown fox jumps over the lazy dog",
        "run 0f8c2c4e-9b7a-4f1e-8a2d-3c5b6a7d8e9f finished",
        "def handler(user: str) -> None:",
        "abcdefghijklmnopqrstuvwxyz0123456789",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert detect(text) == []
    assert redact_text(text).text == text
    assert scrub(text) is text


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "DB_PASSWORD",
        "client_secret",
        "Authorization",
        "x-api-key",
        "GITHUB_TOKEN",
        "sig",
        "STRIPE_KEY",
        "DB_PASS",
        "MYSQL_PWD",
        "SLACK_WEBHOOK_URL",
        "session_id",
        "pwd",
        "ENCRYPTION_KEY",
        "private_key",
    ],
)
def test_names_that_mark_a_secret(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize(
    "name",
    [
        "PWD",
        "OLDPWD",
        "HOME",
        "author",
        "MONKEY",
        "page",
        "status",
        "code",
        "keyboard",
        "key",
        "idempotency_key",
        "public_key",
        "allow_private_addresses",
    ],
)
def test_names_that_do_not_mark_a_secret(name: str) -> None:
    assert not is_secret_key(name)


def test_the_deep_tier_is_not_loaded_by_the_quick_one() -> None:
    import subprocess
    import sys

    probe = (
        "import sys; from aifr.redaction import scrub, redact_url;"
        "scrub('Bearer abcdefghijklmnop'); redact_url('https://u:p@h/');"
        "print('detect_secrets' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("url", "shown"), URLS[:8])
def test_every_place_that_shows_a_url_shows_it_by_the_same_rule(url: str, shown: str) -> None:
    import asyncio

    from aifr.audit import HttpSink, redact_details
    from aifr.stdlib import mask_value
    from aifr.stdlib import redact_url as net_redact_url

    assert net_redact_url(url) == shown  # io.net errors, echoes and redirects
    assert mask_value("SERVICE_URL", url) == shown  # sys.env.read
    assert redact_details({"url": url}) == {"url": shown}  # audit details
    sink = HttpSink(url)
    assert sink.name == f"http:{shown}"  # audit sinks' names, cursors and errors
    asyncio.run(sink.aclose())


def test_in_code_only_quoted_values_count_as_secret_assignments() -> None:
    code = 'PASSWORD = "hunter2xyz"\nuser, password = request.user, request.password\n'
    redacted = redact_text(code, filename="settings.py")
    assert redacted.text.splitlines() == [
        'PASSWORD = "[REDACTED:secret_assignment]"',
        "user, password = request.user, request.password",
    ]
    config = "db:\n  password: hunter2\n"
    assert redact_text(config, filename="config.yaml").text == (
        "db:\n  password: [REDACTED:secret_assignment]\n"
    )


def test_a_long_text_is_scanned_with_offsets_that_point_at_each_secret() -> None:
    lines = [f"line {n}: nothing here" for n in range(500)]
    lines[123] = "token = 'AKIAIOSFODNN7EXAMPLE'"
    lines[456] = "url: https://svc:s3cr3t@db.internal/x"
    text = "\n".join(lines)
    found = {(m.type, text[m.start : m.end]) for m in detect(text)}
    assert ("aws_access_key", "AKIAIOSFODNN7EXAMPLE") in found
    assert ("url_password", "s3cr3t") in found
    assert all("nothing" not in text[m.start : m.end] for m in detect(text))
