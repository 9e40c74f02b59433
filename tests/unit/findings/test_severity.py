"""Severity normalization: every scanner's spelling and CVSS scores map to one enum."""

from __future__ import annotations

import pytest

from aifr.findings import Severity, normalize_severity, severity_from_cvss


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("critical", Severity.CRITICAL),
        ("CRITICAL", Severity.CRITICAL),
        (" High ", Severity.HIGH),
        ("Medium", Severity.MEDIUM),
        ("moderate", Severity.MEDIUM),
        ("low", Severity.LOW),
        ("info", Severity.INFO),
        ("Informational", Severity.INFO),
        ("none", Severity.INFO),
        ("unknown", Severity.UNKNOWN),
        ("UNKNOWN", Severity.UNKNOWN),
        ("", Severity.UNKNOWN),
        ("bogus", Severity.UNKNOWN),
        (None, Severity.UNKNOWN),
        (["high"], Severity.UNKNOWN),
    ],
)
def test_words_map_case_insensitively_and_unreadable_values_are_unknown(
    value: object, expected: Severity
) -> None:
    assert normalize_severity(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (10, Severity.CRITICAL),
        (9.0, Severity.CRITICAL),
        (8.9, Severity.HIGH),
        (7.0, Severity.HIGH),
        ("7.5", Severity.HIGH),
        (6.9, Severity.MEDIUM),
        (4.0, Severity.MEDIUM),
        (3.9, Severity.LOW),
        (0.1, Severity.LOW),
        (0, Severity.INFO),
        ("0.0", Severity.INFO),
        (-1, Severity.UNKNOWN),
        (10.1, Severity.UNKNOWN),
        (float("nan"), Severity.UNKNOWN),
        ("inf", Severity.UNKNOWN),
        (True, Severity.UNKNOWN),
    ],
)
def test_numeric_scores_follow_the_cvss_v3_rating_scale(value: object, expected: Severity) -> None:
    assert normalize_severity(value) is expected


def test_the_scale_orders_critical_first_and_unknown_last() -> None:
    ranked = sorted(Severity, key=lambda s: s.rank, reverse=True)
    assert ranked == [
        Severity.CRITICAL,
        Severity.HIGH,
        Severity.MEDIUM,
        Severity.LOW,
        Severity.INFO,
        Severity.UNKNOWN,
    ]
    assert severity_from_cvss(9.8) is Severity.CRITICAL
