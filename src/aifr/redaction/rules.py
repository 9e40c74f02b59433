"""The project's own secret rules: key names, credential formats, and the cheap screen.

These run on hot paths (every audit record), so they are one compiled alternation whose
branches all start with a literal, behind a screen that rules a string out without the
full regex. ``detect`` adds detect-secrets' plugins and an entropy test on top of them
for long text; nothing here imports detect-secrets.
"""

from __future__ import annotations

import functools
import re

__all__ = ["MAY_HOLD_SECRET", "QUICK_RULES", "SHORTEST_SECRET", "is_secret_key"]

_SECRET_KEY = re.compile(
    r"pass(?:word|wd|phrase)?|(?:^|[_-])pwd(?:$|[_-])|secret|token|api[_-]?key"
    r"|auth(?!or(?:s|ed|ing)?(?:$|[_-]))|credential|private|cookie|session[_-]?(?:id|key|token)|^session$"
    r"|access[_-]?key|signing[_-]?key|signature|^sig$|salt|(?:^|[_-])key(?:$|[_-])"
    r"|dsn|connection[_-]?string|webhook",
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
    shell's directories.
    """
    return name not in _NOT_SECRET_KEYS and _SECRET_KEY.search(name) is not None


# One named group per secret type; the group name is the type findings report.
QUICK_RULES = re.compile(
    "|".join(
        (
            r"(?P<private_key>-----BEGIN [A-Z ]*PRIVATE KEY-----"
            r"[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$))",
            r"(?P<authorization>(?i:\b(?:bearer|basic|token)\s+)[A-Za-z0-9._~+/=-]{8,})",
            r"(?P<aws_access_key>\b(?:AKIA|ASIA)[0-9A-Z]{16}\b)",
            r"(?P<github_token>\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{22,})",
            r"(?P<slack_token>\bxox[abprs]-[A-Za-z0-9-]{10,})",
            r"(?P<openai_key>\bsk-[A-Za-z0-9_-]{20,})",
            r"(?P<stripe_key>\b[rs]k_live_[0-9A-Za-z]{16,})",
            r"(?P<google_api_key>\bAIza[0-9A-Za-z_-]{35})",
            r"(?P<jwt>\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})",
        )
    )
)

# The shortest credential a quick rule matches is 14 characters ("Bearer " and 8);
# passwords in URLs need "://". Shorter text without it is skipped without a regex.
SHORTEST_SECRET = 14

# What every quick finding contains, one branch per rule, each starting with a literal
# so the regex engine skips ahead by first character: on ASCII text it rules out a
# secret in a seventh of the time the full scan takes. Non-ASCII text always gets the
# full scan, whose case-insensitive part also matches letters such as the Kelvin sign.
MAY_HOLD_SECRET = re.compile(
    r"://|-----BEGIN |AKIA|ASIA|gh|github_pat_|xox|sk-|k_live_|AIza|eyJ"
    r"|B(?i:earer)|b(?i:earer)|B(?i:asic)|b(?i:asic)|T(?i:oken)|t(?i:oken)"
)
