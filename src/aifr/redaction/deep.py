"""The deep tier: detect-secrets' plugins, config-line keywords and high-entropy strings.

detect-secrets knows many more key formats than our quick rules (Azure, GitLab, npm,
PyPI, SendGrid, Twilio, Discord, Telegram...), the keyword heuristics for
``password = x`` lines in config and code, and the entropy measures. Its own scanner
works per file and per line and reports no offsets, so its regexes and heuristics are
run here directly, line by line, to get spans. It is imported on first use only (it
pulls in ``requests``), so the hot paths that never reach this tier never load it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["deep_spans"]

_ENTROPY_CANDIDATE = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/=_-]{20,}")
_QUOTED_HEX = re.compile(r"([\"'])([0-9a-fA-F]{20,})\1")
_BASE64_LIMIT = 4.5
_HEX_LIMIT = 3.0
_SHORTEST_CAPTURE = 16


@dataclass(frozen=True, slots=True)
class _Pattern:
    """One detect-secrets regex, the type its findings get, and an optional validity test."""

    type: str
    regex: re.Pattern[str]
    is_valid: Callable[[str], bool] | None = None


def _type_name(secret_type: str) -> str:
    """detect-secrets' display name as a placeholder type (``AWS Access Key`` → ``aws_access_key``)."""
    return re.sub(r"[^a-z0-9]+", "_", secret_type.lower()).strip("_")


@functools.cache
def _patterns() -> tuple[_Pattern, ...]:
    """The regexes of detect-secrets' format plugins (network-free, no verification)."""
    from detect_secrets.plugins import (  # heavy: loaded on first deep scan
        artifactory,
        aws,
        azure_storage_key,
        discord,
        github_token,
        gitlab_token,
        jwt,
        mailchimp,
        npm,
        openai,
        private_key,
        pypi_token,
        sendgrid,
        slack,
        square_oauth,
        stripe,
        telegram_token,
        twilio,
    )

    detectors = (
        artifactory.ArtifactoryDetector,
        aws.AWSKeyDetector,
        azure_storage_key.AzureStorageKeyDetector,
        discord.DiscordBotTokenDetector,
        github_token.GitHubTokenDetector,
        gitlab_token.GitLabTokenDetector,
        mailchimp.MailchimpDetector,
        npm.NpmDetector,
        openai.OpenAIDetector,
        private_key.PrivateKeyDetector,
        pypi_token.PypiTokenDetector,
        sendgrid.SendGridDetector,
        slack.SlackDetector,
        square_oauth.SquareOAuthDetector,
        stripe.StripeDetector,
        telegram_token.TelegramBotTokenDetector,
        twilio.TwilioKeyDetector,
    )
    patterns = [
        _Pattern(_type_name(str(detector.secret_type)), regex)
        for detector in detectors
        for regex in detector.denylist
    ]
    patterns.extend(
        _Pattern("jwt", regex, jwt.JwtTokenDetector.is_formally_valid)
        for regex in jwt.JwtTokenDetector.denylist
    )
    return tuple(patterns)


@functools.cache
def _keyword_regexes() -> tuple[tuple[re.Pattern[str], int], ...]:
    """detect-secrets' keyword regexes for config lines and for code (quotes required)."""
    from detect_secrets.plugins import keyword

    merged = {
        **keyword.CONFIG_DENYLIST_REGEX_TO_GROUP,
        **keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP,
    }
    return tuple(merged.items())


def _format_spans(line: str, offset: int) -> Iterator[tuple[str, int, int]]:
    for pattern in _patterns():
        for match in pattern.regex.finditer(line):
            index = _secret_group(match)
            if pattern.is_valid is None or pattern.is_valid(match.group(index)):
                yield pattern.type, offset + match.start(index), offset + match.end(index)


def _secret_group(match: re.Match[str]) -> int:
    """The group holding the secret: the longest capture, unless it is only a prefix.

    Some plugins capture the secret after its context (``aws...'(key)'``), others only
    a prefix (``(glpat)-...``); a capture shorter than a credential is taken for the latter.
    """
    groups = [i for i in range(1, len(match.groups()) + 1) if match.group(i)]
    if not groups:
        return 0
    longest = max(groups, key=lambda i: len(match.group(i)))
    return longest if len(match.group(longest)) >= _SHORTEST_CAPTURE else 0


def _keyword_spans(line: str, offset: int) -> Iterator[tuple[str, int, int]]:
    from detect_secrets.filters import heuristic

    if heuristic.is_indirect_reference(line):
        return
    for regex, group in _keyword_regexes():
        for match in regex.finditer(line):
            value = match.group(group)
            if not value or heuristic.is_templated_secret(value):
                continue
            if heuristic.is_prefixed_with_dollar_sign(value):
                continue
            yield "secret_assignment", offset + match.start(group), offset + match.end(group)


def _entropy(data: str, charset: str) -> float:
    from detect_secrets.plugins.high_entropy_strings import (
        Base64HighEntropyString,
        HexHighEntropyString,
    )

    plugin = HexHighEntropyString() if charset == "hex" else Base64HighEntropyString()
    return float(plugin.calculate_shannon_entropy(data))


def _entropy_spans(line: str, offset: int) -> Iterator[tuple[str, int, int]]:
    from detect_secrets.filters import heuristic

    for match in _ENTROPY_CANDIDATE.finditer(line):
        token = match.group(0)
        has_both = any(c.isdigit() for c in token) and any(c.isalpha() for c in token)
        if (
            has_both
            and _entropy(token, "base64") > _BASE64_LIMIT
            and not heuristic.is_sequential_string(token)
            and not heuristic.is_potential_uuid(token)
        ):
            yield "high_entropy_string", offset + match.start(), offset + match.end()
    for match in _QUOTED_HEX.finditer(line):
        token = match.group(2)
        if _entropy(token, "hex") > _HEX_LIMIT and not heuristic.is_sequential_string(token):
            yield "high_entropy_hex", offset + match.start(2), offset + match.end(2)


def deep_spans(text: str) -> Iterator[tuple[str, int, int]]:
    """``(type, start, end)`` of each secret the deep tier finds, line by line."""
    offset = 0
    for line in text.splitlines(keepends=True):
        if line.strip():
            yield from _format_spans(line, offset)
            yield from _keyword_spans(line, offset)
            yield from _entropy_spans(line, offset)
        offset += len(line)
