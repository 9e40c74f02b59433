"""The one secret detector: typed findings, typed placeholders and counts per type.

Two tiers share one table of types. The quick tier (our rules and the URL rule) is
cheap enough for every audit record and log line: ``scrub`` runs only it, behind a
screen that returns most strings untouched without a regex. ``detect`` and
``redact_text`` add the deep tier (detect-secrets' formats, keyword lines such as
``password = x``, high-entropy strings) for text worth the time: files being ingested,
values a user asked to have checked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aifr.redaction.deep import deep_spans
from aifr.redaction.rules import MAY_HOLD_TOKEN, QUICK_RULES, SHORTEST_SECRET
from aifr.redaction.urls import URL_IN_TEXT, URL_MARK, url_secret_spans

__all__ = ["RedactedText", "SecretMatch", "detect", "placeholder", "redact_text", "scrub"]

_URL_TYPES = frozenset({"url_password", "url_query_secret"})


@dataclass(frozen=True, slots=True)
class SecretMatch:
    """A secret found in a text: its type (``aws_access_key``) and its span."""

    type: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class RedactedText:
    """A text with each secret replaced by its typed placeholder, and how many per type."""

    text: str
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """How many secrets were replaced."""
        return sum(self.counts.values())


def placeholder(secret_type: str) -> str:
    """What replaces a secret of ``secret_type``: ``[REDACTED:jwt]``; ``***`` inside a URL."""
    return URL_MARK if secret_type in _URL_TYPES else f"[REDACTED:{secret_type}]"


def _quick_spans(text: str, *, tokens: bool = True) -> Iterable[tuple[str, int, int]]:
    """The quick tier's spans, URL parts first so that a URL keeps its readable marker.

    ``tokens=False`` skips the credential-format rules (the screen found none of their
    literals), leaving only the URL rule.
    """
    if "://" in text:
        for url in URL_IN_TEXT.finditer(text):
            yield from url_secret_spans(url.group(0), url.start())
    if tokens:
        for kind, rule in QUICK_RULES:
            for match in rule.finditer(text):
                yield kind, match.start(), match.end()


def _resolve(spans: Iterable[tuple[str, int, int]]) -> list[SecretMatch]:
    """Non-overlapping matches in text order; of two that overlap, the earlier-listed wins."""
    taken: list[SecretMatch] = []
    for kind, start, end in spans:
        if end > start and all(end <= t.start or start >= t.end for t in taken):
            taken.append(SecretMatch(kind, start, end))
    return sorted(taken, key=lambda m: m.start)


def detect(text: str, *, filename: str = "") -> list[SecretMatch]:
    """Every secret in ``text``, both tiers, in text order and never overlapping.

    ``filename`` (a path or name, optional) tells the keyword rules what kind of text
    this is: in code only quoted values count (``password = "x"``, not
    ``password = request.password``), in config files and unknown text any value does.
    """
    quick = list(_quick_spans(text))
    return _resolve([*quick, *deep_spans(text, filename)])


def _replace(text: str, matches: list[SecretMatch]) -> RedactedText:
    if not matches:
        return RedactedText(text)
    pieces: list[str] = []
    cursor = 0
    for match in matches:
        pieces.append(text[cursor : match.start])
        pieces.append(placeholder(match.type))
        cursor = match.end
    pieces.append(text[cursor:])
    return RedactedText("".join(pieces), dict(Counter(m.type for m in matches)))


def redact_text(text: str, *, filename: str = "") -> RedactedText:
    """``text`` with every secret either tier finds replaced by its typed placeholder."""
    return _replace(text, detect(text, filename=filename))


def scrub(text: str) -> str:
    """``text`` with what the quick tier finds replaced; the same object when clean.

    For hot paths (audit details, log lines, error messages): most strings are ruled out
    by length or by the screen without running the rules.
    """
    has_url = "://" in text
    if len(text) < SHORTEST_SECRET and not has_url:
        return text
    # Non-ASCII text always gets every rule: its case-insensitive part also matches
    # letters such as the Kelvin sign, which the screen's literals do not.
    tokens = not text.isascii() or MAY_HOLD_TOKEN.search(text) is not None
    if not tokens and not has_url:
        return text
    matches = _resolve(_quick_spans(text, tokens=tokens))
    return _replace(text, matches).text if matches else text
