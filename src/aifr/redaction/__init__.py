"""The project's one secret detector (issue 23's Sanitizer stands on it).

``detect`` finds secrets in text as typed spans; ``redact_text`` replaces them with
typed placeholders (``[REDACTED:aws_access_key]``) and counts them per type; ``scrub``
is the quick tier for hot paths; ``redact_url`` shows a URL with ``user:***@`` and
``?token=***``; ``is_secret_key`` says whether a name (key, header, parameter,
variable) marks its value as a secret.
"""

from aifr.redaction.detector import (
    RedactedText,
    SecretMatch,
    detect,
    placeholder,
    redact_text,
    scrub,
)
from aifr.redaction.rules import is_secret_key
from aifr.redaction.urls import URL_MARK, redact_url

__all__ = [
    "URL_MARK",
    "RedactedText",
    "SecretMatch",
    "detect",
    "is_secret_key",
    "placeholder",
    "redact_text",
    "redact_url",
    "scrub",
]
