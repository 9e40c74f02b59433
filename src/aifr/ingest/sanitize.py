"""The Sanitizer: every secret in a file's text is replaced before anything else sees it.

It stands on the project's one detector (:mod:`aifr.redaction`) and adds what ingestion
needs on top: a placeholder keeps the lines it covers (a private key of 27 lines becomes
a placeholder and 26 newlines), so the line ranges chunks record still point at the right
lines of the file on disk; and counts per type add up across a whole ingest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from aifr.redaction import detect, placeholder

__all__ = ["SanitizedText", "Sanitizer"]


@dataclass(frozen=True, slots=True)
class SanitizedText:
    """A text with every secret replaced by a typed placeholder, and the counts per type."""

    text: str
    counts: Mapping[str, int] = field(default_factory=dict)


class Sanitizer:
    """Redacts secrets with typed placeholders (``[REDACTED:aws_access_key]``), line-safe."""

    def sanitize(self, text: str, *, filename: str = "") -> SanitizedText:
        """``text`` with each secret replaced; the line count never changes.

        ``filename`` tells the detector's keyword rules what kind of text this is (in
        code only quoted values count; in config files any value does).
        """
        matches = detect(text, filename=filename)
        if not matches:
            return SanitizedText(text)
        pieces: list[str] = []
        cursor = 0
        for match in matches:
            pieces.append(text[cursor : match.start])
            pieces.append(placeholder(match.type))
            pieces.append("\n" * text.count("\n", match.start, match.end))
            cursor = match.end
        pieces.append(text[cursor:])
        counts = Counter(match.type for match in matches)
        return SanitizedText("".join(pieces), dict(sorted(counts.items())))
