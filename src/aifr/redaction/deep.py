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
def _keyword_regexes(filename: str) -> tuple[tuple[re.Pattern[str], int], ...]:
    """detect-secrets' keyword regexes for the file's type (quotes required in code).

    A text of unknown type gets the config-file set, which also takes unquoted values
    (``password = x``): hiding a harmless value loses a detail, missing a secret leaks it.
    """
    from detect_secrets.plugins import keyword
    from detect_secrets.util.filetype import FileType, determine_file_type

    file_type = determine_file_type(filename) if filename else FileType.OTHER
    if file_type == FileType.OTHER:
        return tuple(keyword.CONFIG_DENYLIST_REGEX_TO_GROUP.items())
    chosen = keyword.REGEX_BY_FILETYPE.get(
        file_type, keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP
    )
    return tuple(chosen.items())


@functools.cache
def _keyword_screen() -> re.Pattern[str]:
    """The words a keyword line holds; lines without one skip the keyword regexes."""
    from detect_secrets.plugins import keyword

    return re.compile(keyword.DENYLIST_REGEX, re.IGNORECASE)


def _format_spans(text: str) -> Iterator[tuple[str, int, int]]:
    """Known key formats, each regex run once over the whole text (they match within a line)."""
    for pattern in _patterns():
        for match in pattern.regex.finditer(text):
            index = _secret_group(match)
            if pattern.is_valid is None or pattern.is_valid(match.group(index)):
                yield pattern.type, match.start(index), match.end(index)


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


def _keyword_spans(line: str, offset: int, filename: str) -> Iterator[tuple[str, int, int]]:
    from detect_secrets.filters import heuristic

    if heuristic.is_indirect_reference(line):
        return
    for regex, group in _keyword_regexes(filename):
        for match in regex.finditer(line):
            value = match.group(group)
            if not value or heuristic.is_templated_secret(value):
                continue
            if heuristic.is_prefixed_with_dollar_sign(value):
                continue
            yield "secret_assignment", offset + match.start(group), offset + match.end(group)


@functools.cache
def _entropy_measures() -> dict[str, Callable[[str], float]]:
    """detect-secrets' Shannon entropy over the base64 and the hex alphabets."""
    from detect_secrets.plugins.high_entropy_strings import (
        Base64HighEntropyString,
        HexHighEntropyString,
    )

    return {
        "base64": Base64HighEntropyString().calculate_shannon_entropy,
        "hex": HexHighEntropyString().calculate_shannon_entropy,
    }


def _entropy(data: str, charset: str) -> float:
    return float(_entropy_measures()[charset](data))


def _entropy_spans(text: str) -> Iterator[tuple[str, int, int]]:
    from detect_secrets.filters import heuristic

    for match in _ENTROPY_CANDIDATE.finditer(text):
        token = match.group(0)
        has_both = any(c.isdigit() for c in token) and any(c.isalpha() for c in token)
        if (
            has_both
            and _entropy(token, "base64") > _BASE64_LIMIT
            and not heuristic.is_sequential_string(token)
            and not heuristic.is_potential_uuid(token)
        ):
            yield "high_entropy_string", match.start(), match.end()
    for match in _QUOTED_HEX.finditer(text):
        token = match.group(2)
        if _entropy(token, "hex") > _HEX_LIMIT and not heuristic.is_sequential_string(token):
            yield "high_entropy_hex", match.start(2), match.end(2)


def deep_spans(text: str, filename: str = "") -> Iterator[tuple[str, int, int]]:
    """``(type, start, end)`` of each secret the deep tier finds.

    ``filename`` (optional) picks the keyword rules for its type, as detect-secrets does:
    in code a value must be quoted (``password = "x"``), in config files it need not be.
    """
    yield from _format_spans(text)
    seen = -1
    for hit in _keyword_screen().finditer(text):  # most lines name no secret: skip them
        start = text.rfind("\n", 0, hit.start()) + 1
        if start <= seen:
            continue
        end = text.find("\n", hit.start())
        end = len(text) if end == -1 else end
        seen = start
        yield from _keyword_spans(text[start:end].rstrip("\r"), start, filename)
    yield from _entropy_spans(text)
