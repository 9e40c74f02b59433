"""One severity scale for every scanner, and the rule that maps their values onto it.

Scanners disagree on spelling (``info``, ``Informational``, ``HIGH``), some write a CVSS
score instead of a word, and some write nothing. Filters, exports and SARIF levels need
one ordered scale, so every value goes through :func:`normalize_severity` once, where it
enters, and the scanner's own spelling is kept beside it (``Finding.scanner_severity``).

Mapping (words compared without regard to case or surrounding blanks):

| input                                                     | severity   |
|-----------------------------------------------------------|------------|
| ``critical``, ``crit``                                    | critical   |
| ``high``                                                  | high       |
| ``medium``, ``moderate``, ``med``                         | medium     |
| ``low``                                                   | low        |
| ``info``, ``informational``, ``information``, ``none``    | info       |
| ``unknown``, ``""``, missing, any other word              | unknown    |
| a number or numeric string (CVSS v3 qualitative scale):   |            |
| 9.0 to 10.0                                               | critical   |
| 7.0 to 8.9                                                | high       |
| 4.0 to 6.9                                                | medium     |
| 0.1 to 3.9                                                | low        |
| 0.0                                                       | info       |
| below 0, above 10, NaN, infinity, booleans                | unknown    |

``unknown`` is kept apart from ``info`` on purpose: nuclei writes ``unknown`` for a
template whose author did not rate it, which is not a statement that it is harmless.
"""

from __future__ import annotations

import math
from enum import StrEnum

__all__ = ["SEVERITY_ORDER", "Severity", "normalize_severity", "severity_from_cvss"]


class Severity(StrEnum):
    """The normalized severity of a finding, from ``critical`` down to ``unknown``."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"
    UNKNOWN = "unknown"

    @property
    def rank(self) -> int:
        """Order on the scale: critical is 5, info is 1, unknown is 0 (sorts last)."""
        return SEVERITY_ORDER[self]


SEVERITY_ORDER: dict[Severity, int] = {
    Severity.CRITICAL: 5,
    Severity.HIGH: 4,
    Severity.MEDIUM: 3,
    Severity.LOW: 2,
    Severity.INFO: 1,
    Severity.UNKNOWN: 0,
}

_WORDS: dict[str, Severity] = {
    "critical": Severity.CRITICAL,
    "crit": Severity.CRITICAL,
    "high": Severity.HIGH,
    "medium": Severity.MEDIUM,
    "moderate": Severity.MEDIUM,
    "med": Severity.MEDIUM,
    "low": Severity.LOW,
    "info": Severity.INFO,
    "informational": Severity.INFO,
    "information": Severity.INFO,
    "none": Severity.INFO,
    "unknown": Severity.UNKNOWN,
}


def severity_from_cvss(score: float) -> Severity:
    """The CVSS v3 qualitative rating of a base score (0.0 is ``info``, out of range ``unknown``)."""
    if math.isnan(score) or score < 0.0 or score > 10.0:
        return Severity.UNKNOWN
    if score >= 9.0:
        return Severity.CRITICAL
    if score >= 7.0:
        return Severity.HIGH
    if score >= 4.0:
        return Severity.MEDIUM
    if score > 0.0:
        return Severity.LOW
    return Severity.INFO


def normalize_severity(value: object) -> Severity:
    """Map any scanner's severity value (word, CVSS number, numeric string, None) to one enum.

    Never raises: a value it cannot read is ``unknown``, so one odd record does not stop
    an import; the original spelling is kept by the caller.
    """
    if isinstance(value, Severity):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        found = _WORDS.get(word)
        if found is not None:
            return found
        try:
            return severity_from_cvss(float(word))
        except ValueError:
            return Severity.UNKNOWN
    if isinstance(value, bool):  # bool is an int subclass; True is not a score
        return Severity.UNKNOWN
    if isinstance(value, int | float):
        return severity_from_cvss(float(value))
    return Severity.UNKNOWN
