"""The ledger's redaction pass: secret keys and credential-looking values never stay."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aifr.audit import REDACTED, redact_details, redact_text
from aifr.redaction.detector import _quick_spans, _replace, _resolve


def test_values_under_secret_looking_keys_are_redacted_at_any_depth() -> None:
    details = {
        "password": "hunter2",
        "nested": {"Authorization": "whatever", "client_secret": 12345, "note": "fine"},
        "items": [{"api_key": "k"}, "plain"],
        "is_token_valid": True,
    }
    clean = redact_details(details)
    assert clean["password"] == REDACTED
    assert clean["nested"] == {"Authorization": REDACTED, "client_secret": REDACTED, "note": "fine"}
    assert clean["items"] == [{"api_key": REDACTED}, "plain"]
    assert clean["is_token_valid"] is True
    assert details["password"] == "hunter2"  # the caller's mapping is not mutated


def test_credential_looking_strings_are_redacted_wherever_they_appear() -> None:
    samples = [
        "Bearer abcdefghijklmnopqrstuvwxyz012345",
        "token abcdefgh",  # the shortest credential a value pattern knows
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_" + "a" * 36,
        "xoxb-1234567890-abcdefghij",
        "sk-" + "A" * 32,
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----",
    ]
    for sample in samples:
        redacted = redact_text(f"got {sample} here")
        assert sample not in redacted and "[REDACTED:" in redacted, sample
    assert redact_text("postgres://app:s3cret@db/x") == "postgres://app:***@db/x"


def test_clean_details_come_back_as_the_same_object() -> None:
    details = {"status": "ok", "count": 3, "ref": "secret://API_TOKEN"}
    assert redact_details(details) is details


def test_credentials_are_redacted_whatever_the_letter_case_of_their_scheme() -> None:
    for scheme in ("BEARER", "Bearer", "bEaReR", "Basic", "BASIC", "TOKEN", "Token", "tOkEn"):
        text = f"header {scheme} abcdefgh12345678 sent"
        assert redact_text(text) == "header [REDACTED:authorization] sent", scheme
    kelvin = "to\u212aen abcdefgh12345678"  # KELVIN SIGN matches "k" case-insensitively
    assert redact_text(kelvin) == "[REDACTED:authorization]"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "x",
                " ",
                "-",
                "_",
                ".",
                "@",
                ":",
                "//",
                "Bearer ",
                "token\t",
                "AKIA",
                "gh",
                "p_",
                "xoxb-",
                "sk-",
                "rk_live_",
                "AIza",
                "eyJ",
                "-----BEGIN RSA PRIVATE KEY-----",
                "ABCDEFGHIJKLMNOP",
                "abcdefgh0123",
                "\u212a",
                "\u00e9",
            ]
        ),
        max_size=24,
    ).map("".join)
)
def test_the_quick_screen_never_lets_through_what_the_full_scan_redacts(text: str) -> None:
    assert redact_text(text) == _replace(text, _resolve(_quick_spans(text))).text
