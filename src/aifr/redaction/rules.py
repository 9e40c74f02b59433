"""The project's own secret rules: key names, credential formats, and the cheap screen.

These run on hot paths (every audit record), so they are one compiled alternation whose
branches all start with a literal, behind a screen that rules a string out without the
full regex. ``detect`` adds detect-secrets' plugins and an entropy test on top of them
for long text; nothing here imports detect-secrets.
"""

from __future__ import annotations

import functools
import re

__all__ = ["MAY_HOLD_TOKEN", "QUICK_RULES", "SHORTEST_SECRET", "is_secret_key"]

_SECRET_KEY = re.compile(
    r"pass(?:word|wd|phrase)?|(?:^|[_-])pwd(?:$|[_-])|secret|token|api[_-]?key"
    r"|auth(?!or(?:s|ed|ing)?(?:$|[_-]))|credential|private[_-]?key|cookie"
    r"|session[_-]?(?:id|key|token)|^session$|access[_-]?key|signing[_-]?key|signature"
    r"|^sig$|salt|dsn|connection[_-]?string|webhook",
    re.IGNORECASE,
)
# A compound name ending in "key" (STRIPE_KEY, encryption_key) is a key, unless it is one
# of the keys that name or index things (idempotency_key, public_key, sort_key).
_KEY_SUFFIX = re.compile(r"[_-]key$", re.IGNORECASE)
_NAMING_KEY = re.compile(
    r"(?:^|[_-])(?:idempotency|public|primary|foreign|sort|cache|partition|lookup|dedup"
    r"|group|routing|object|row|hash|config|map)[_-]key$",
    re.IGNORECASE,
)
# The shell's working directories, not passwords despite the letters.
_NOT_SECRET_KEYS = frozenset({"PWD", "OLDPWD"})


@functools.lru_cache(maxsize=4096)
def is_secret_key(name: str) -> bool:
    """Whether a key, header, query parameter or variable name says its value is a secret.

    One rule for audit details (``password``, ``client_secret``), HTTP headers
    (``Authorization``, ``X-Api-Key``), query parameters (``?token=``, ``&sig=``) and
    environment variables (``DB_PASS``, ``STRIPE_KEY``); ``PWD`` and ``OLDPWD`` are the
    shell's directories, and ``key``, ``idempotency_key`` or ``public_key`` name things.
    """
    if name in _NOT_SECRET_KEYS:
        return False
    if _SECRET_KEY.search(name) is not None:
        return True
    return _KEY_SUFFIX.search(name) is not None and _NAMING_KEY.search(name) is None


# One regex per secret type, each starting with a literal where it can, so the regex
# engine skips ahead to candidates instead of trying every rule at every position.
QUICK_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        (
            "private_key",
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
        ),
        ("authorization", r"(?i:\b(?:bearer|basic|token)\s+)[A-Za-z0-9._~+/=-]{8,}"),
        ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
        ("github_token", r"\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{22,}"),
        ("slack_token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
        ("openai_key", r"\bsk-[A-Za-z0-9_-]{20,}"),
        ("stripe_key", r"\b[rs]k_live_[0-9A-Za-z]{16,}"),
        ("google_api_key", r"AIza(?<!\wAIza)[0-9A-Za-z_-]{35}"),  # literal first: fast scan
        ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    )
)

# The shortest credential a quick rule matches is 14 characters ("Bearer " and 8);
# passwords in URLs need "://". Shorter text without it is skipped without a regex.
# Text with "://" gets the URL rule; the QUICK_RULES run only where MAY_HOLD_TOKEN says.
SHORTEST_SECRET = 14

# What every quick finding contains, one branch per rule, each starting with a literal
# so the regex engine skips ahead by first character: on ASCII text it rules out a
# secret in a seventh of the time the full scan takes. Non-ASCII text always gets the
# full scan, whose case-insensitive part also matches letters such as the Kelvin sign.
MAY_HOLD_TOKEN = re.compile(
    r"-----BEGIN |AKIA|ASIA|gh|github_pat_|xox|sk-|k_live_|AIza|eyJ"
    r"|B(?i:earer)|b(?i:earer)|B(?i:asic)|b(?i:asic)|T(?i:oken)|t(?i:oken)"
)
