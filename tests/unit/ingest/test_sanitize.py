"""Sanitizer: typed placeholders, counts per type, line numbers kept."""

from __future__ import annotations

from pathlib import Path

from aifr.ingest.sanitize import Sanitizer
from canary_kit import leaked, plant


def test_every_canary_type_is_replaced_by_a_typed_placeholder(tmp_path: Path) -> None:
    plant(tmp_path)
    sanitizer = Sanitizer()
    totals: dict[str, int] = {}
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file():
            clean = sanitizer.sanitize(path.read_text())
            assert leaked(clean.text) == [], path
            for kind, count in clean.counts.items():
                totals[kind] = totals.get(kind, 0) + count
    assert totals == {
        "aws_access_key": 1,
        "github_token": 1,
        "high_entropy_string": 1,
        "jwt": 1,
        "private_key": 1,
        "secret_assignment": 1,
        "slack_token": 1,
        "url_password": 1,
    }


def test_placeholder_names_the_type() -> None:
    clean = Sanitizer().sanitize('key = "AKIAQ3EGRWKZ5XVN7TUP"\n')
    assert "[REDACTED:aws_access_key]" in clean.text


def test_a_multiline_private_key_keeps_the_line_count() -> None:
    text = "a = 1\n-----BEGIN PRIVATE KEY-----\nAAAA\nBBBB\n-----END PRIVATE KEY-----\nb = 2\n"
    clean = Sanitizer().sanitize(text)
    assert clean.text.count("\n") == text.count("\n")
    assert clean.text.splitlines()[5] == "b = 2"
    assert dict(clean.counts) == {"private_key": 1}


def test_clean_text_is_returned_unchanged_with_no_counts() -> None:
    text = "def add(a, b):\n    return a + b\n"
    clean = Sanitizer().sanitize(text)
    assert clean.text == text and dict(clean.counts) == {}


def test_in_code_only_quoted_values_count_while_in_config_any_value_does() -> None:
    code = "password = request.password\n"
    assert dict(Sanitizer().sanitize(code, filename="src/login.py").counts) == {}
    config = "password = hunter2-Correct-Horse-Battery\n"
    assert dict(Sanitizer().sanitize(config, filename="deploy/app.ini").counts) == {
        "secret_assignment": 1
    }
