"""secret:// references: providers, resolution order, redaction."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from types import MappingProxyType

import pytest

from aifr.errors import ConfigError, ErrorCode, ExecutionError
from aifr.invocation import (
    EnvSecretProvider,
    FileSecretProvider,
    KeyringSecretProvider,
    Redactor,
    SecretResolver,
)
from aifr.invocation.secret_refs import has_secret_refs
from keyring_kit import memory_keyring


def test_env_provider_reads_the_prefixed_variable() -> None:
    provider = EnvSecretProvider({"APP_TOKEN": "t0k"}, prefix="APP_")
    assert provider.lookup("TOKEN") == "t0k"
    assert provider.lookup("OTHER") is None


def test_file_provider_reads_one_file_per_secret_without_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "DB_PASSWORD").write_text("hunter2\n")
    provider = FileSecretProvider(tmp_path)
    assert provider.lookup("DB_PASSWORD") == "hunter2"
    assert provider.lookup("MISSING") is None


def test_keyring_provider_reads_the_os_keyring_backend() -> None:
    with memory_keyring("aifr-test", {"API_KEY": "from-keyring"}):
        assert KeyringSecretProvider("aifr-test").lookup("API_KEY") == "from-keyring"
        assert KeyringSecretProvider("aifr-test").lookup("NOPE") is None


def test_providers_are_asked_in_order_and_the_first_hit_wins(tmp_path: Path) -> None:
    (tmp_path / "TOKEN").write_text("from-file")
    resolver = SecretResolver(
        [EnvSecretProvider({"TOKEN": "from-env"}), FileSecretProvider(tmp_path)]
    )
    assert resolver.resolve("secret://TOKEN") == "from-env"
    resolver = SecretResolver([FileSecretProvider(tmp_path), EnvSecretProvider({"TOKEN": "e"})])
    assert resolver.resolve("secret://TOKEN") == "from-file"


def test_an_unknown_secret_names_the_secret_and_the_providers_tried() -> None:
    resolver = SecretResolver([EnvSecretProvider({})])
    with pytest.raises(ConfigError) as caught:
        resolver.resolve("secret://NOPE")
    assert caught.value.code is ErrorCode.SECRET_NOT_FOUND
    assert "NOPE" in caught.value.message and "env" in caught.value.message


def test_a_malformed_reference_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        SecretResolver([EnvSecretProvider({})]).resolve("secret://../etc/passwd")
    assert caught.value.code is ErrorCode.SECRET_NOT_FOUND


def test_resolve_all_walks_nested_values_and_returns_a_redactor() -> None:
    resolver = SecretResolver([EnvSecretProvider({"A": "alpha-secret", "B": "beta-secret"})])
    value = {"x": "secret://A", "list": ["plain", ("secret://B",)], "n": 3}
    assert has_secret_refs(value)
    resolved, redactor = resolver.resolve_all(value)
    assert resolved == {"x": "alpha-secret", "list": ["plain", ("beta-secret",)], "n": 3}
    assert value["x"] == "secret://A"
    assert redactor.text("token alpha-secret and beta-secret") == (
        "token [secret:A] and [secret:B]"
    )


def test_redactor_scrubs_nested_output_and_keys_longest_secret_first() -> None:
    redactor = Redactor({"SHORT": "abc123", "LONG": "abc123-extended"})
    scrubbed = redactor.scrub({"abc123": ["abc123-extended", {"k": "x abc123 y"}], "n": 1})
    assert scrubbed == {"[secret:SHORT]": ["[secret:LONG]", {"k": "x [secret:SHORT] y"}], "n": 1}


def test_redacting_an_error_scrubs_message_details_repr_and_drops_the_cause() -> None:
    redactor = Redactor({"TOKEN": "s3cr3t-value"})
    try:
        try:
            raise ValueError("bad s3cr3t-value")
        except ValueError as inner:
            raise ExecutionError("failed with s3cr3t-value", seen="s3cr3t-value") from inner
    except ExecutionError as exc:
        error = redactor.error(exc)
    assert "s3cr3t-value" not in error.message
    assert "s3cr3t-value" not in repr(error) and "s3cr3t-value" not in str(error)
    assert error.details == {"seen": "[secret:TOKEN]"}
    assert error.__cause__ is None and error.__context__ is None


def test_an_empty_redactor_changes_nothing() -> None:
    redactor = Redactor()
    assert not redactor
    value = {"a": "b"}
    assert redactor.scrub(value) is value


class _Text(str):
    """A str subclass: the scan's exact-type fast path must not skip it."""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({}, False),
        ({"n": 1, "f": 2.5, "b": True, "none": None}, False),
        ({"x": "secret://A"}, True),
        ({"deep": [{"deeper": ("plain", "secret://B")}]}, True),
        ({"deep": [{"deeper": ("plain", "secret:/B")}]}, False),
        (MappingProxyType({"x": "secret://A"}), True),
        (OrderedDict(x=[1, 2, "secret://C"]), True),
        ({"x": _Text("secret://D")}, True),
        ([1, 2, 3, "x"], False),
        ("secret://E", True),
        ({"x": b"secret://F"}, False),  # bytes are no reference
    ],
)
def test_the_secret_reference_scan_finds_a_reference_in_every_container_shape(
    value: object, expected: bool
) -> None:
    assert has_secret_refs(value) is expected
