"""What a nuclei template's ``info`` says about its rule, derived once per template.

Every result of one template repeats the same ``info`` object (name, severity, tags,
references, classification...). :class:`RuleFactsCache` derives the finding fields from it
once and reuses them while the next result's ``info`` is equal, which is most of the cost
of parsing a result; an ``info`` that differs (another template version in the same file)
is derived again, so the cache never changes what a record parses to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pydantic import JsonValue

from aifr.findings.parsers.values import as_float, as_str, as_str_tuple
from aifr.findings.severity import Severity, normalize_severity

__all__ = ["INFO_KEYS", "RuleFacts", "RuleFactsCache"]

# Info keys mapped to finding fields or to rule_metadata; other info keys go to raw.
INFO_KEYS: Final = frozenset(
    {
        "name",
        "author",
        "tags",
        "description",
        "impact",
        "reference",
        "severity",
        "metadata",
        "classification",
        "remediation",
    }
)
_CLASSIFICATION_KEYS: Final = frozenset({"cve-id", "cwe-id", "cvss-metrics", "cvss-score"})
_NOTHING: Final[Mapping[str, object]] = {}
_CACHE_LIMIT: Final = 4096  # info variants remembered per stream (cleared when full)
_VARIANTS: Final = 8  # info variants remembered per template


class RuleFacts:
    """The finding fields one template's ``info`` gives (read-only, shared by its results)."""

    __slots__ = (
        "cve",
        "cvss_score",
        "cvss_vector",
        "cwe",
        "description",
        "extra_info",
        "metadata",
        "references",
        "remediation",
        "scanner_severity",
        "severity",
        "tags",
        "title",
    )
    title: str
    severity: Severity
    scanner_severity: str | None
    description: str | None
    remediation: str | None
    cvss_score: float | None
    cvss_vector: str | None
    cwe: tuple[str, ...]
    cve: tuple[str, ...]
    references: tuple[str, ...]
    tags: tuple[str, ...]
    metadata: dict[str, JsonValue]
    extra_info: dict[str, JsonValue] | None

    def __init__(
        self,
        info: Mapping[str, object],
        rule_id: str,
        previous: tuple[Mapping[str, object], RuleFacts] | None = None,
    ) -> None:
        """Derive the facts of ``info``; parts whose source equals ``previous``'s are reused.

        Results of one template sometimes differ in one info key only (a rating changed
        between template versions); the other parts are not derived again.
        """
        old_info, old = previous if previous is not None else (_NOTHING, None)
        get, old_get = info.get, old_info.get
        severity_value = get("severity")
        name = get("name")
        self.title = name if isinstance(name, str) and name else rule_id
        self.severity = normalize_severity(severity_value)
        self.scanner_severity = _spelling(severity_value)
        self.description = as_str(get("description"))
        self.remediation = as_str(get("remediation"))
        found = get("classification")
        same_class = old is not None and found == old_get("classification")
        if old is not None and same_class:
            self.cvss_score, self.cvss_vector = old.cvss_score, old.cvss_vector
            self.cwe, self.cve = old.cwe, old.cve
        else:
            cls: Mapping[str, object] = found if isinstance(found, dict) else _NOTHING
            self.cvss_score = _score(cls.get("cvss-score"))
            self.cvss_vector = as_str(cls.get("cvss-metrics"))
            self.cwe = _upper_ids(cls.get("cwe-id"))
            self.cve = _upper_ids(cls.get("cve-id"))
        reference, tags = get("reference"), get("tags")
        same_refs = old is not None and reference == old_get("reference")
        self.references = old.references if old and same_refs else _references(reference)
        same_tags = old is not None and tags == old_get("tags")
        self.tags = old.tags if old and same_tags else as_str_tuple(tags, comma_separated=True)
        if (
            old is not None
            and same_class
            and get("author") == old_get("author")
            and get("metadata") == old_get("metadata")
            and get("impact") == old_get("impact")
        ):
            self.metadata = old.metadata
        else:
            self.metadata = _info_metadata(info, found if isinstance(found, dict) else _NOTHING)
        if old is not None and info.keys() == old_info.keys():
            extra = {k: info[k] for k in old.extra_info} if old.extra_info else None
        else:
            extra = {k: v for k, v in info.items() if k not in INFO_KEYS} or None
        self.extra_info = extra  # type: ignore[assignment]  # JSON values


class RuleFactsCache:
    """Per-stream memory of the facts derived from each template's ``info``.

    A few ``info`` variants are kept per template (results of one template may carry
    another rating or reference list when template versions mix, or when a file joins
    several scans): a variant seen before is reused instead of derived again.
    """

    __slots__ = ("_known", "_size")

    def __init__(self) -> None:
        self._known: dict[str, list[tuple[Mapping[str, object], RuleFacts]]] = {}
        self._size = 0

    def facts(self, info: Mapping[str, object], rule_id: str) -> RuleFacts:
        """The facts of ``info``, reused when one of the template's recent ``info`` was equal."""
        variants = self._known.get(rule_id)
        if variants is None:
            if self._size >= _CACHE_LIMIT:
                self._known.clear()
                self._size = 0
            variants = self._known[rule_id] = []
        else:
            for known in reversed(variants):
                if known[0] == info:
                    return known[1]
        facts = RuleFacts(info, rule_id, variants[-1] if variants else None)
        if len(variants) >= _VARIANTS:
            del variants[0]
            self._size -= 1
        variants.append((info, facts))
        self._size += 1
        return facts


def _info_metadata(info: Mapping[str, object], cls: Mapping[str, object]) -> dict[str, JsonValue]:
    meta: dict[str, JsonValue] = {}
    authors = info.get("author")
    if authors is not None:
        listed = as_str_tuple(authors, comma_separated=True)
        meta["author"] = list(listed) if listed or isinstance(authors, str) else authors  # type: ignore[assignment]  # a JSON value
    for key in ("metadata", "impact"):
        if key in info:
            meta[key] = info[key]  # type: ignore[assignment]  # a JSON value
    rest = {k: v for k, v in cls.items() if k not in _CLASSIFICATION_KEYS}
    if rest:
        meta["classification"] = rest  # type: ignore[assignment]  # JSON values
    return meta


def _spelling(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _score(value: object) -> float | None:
    score = as_float(value)
    return score if score is not None and 0.0 <= score <= 10.0 else None


def _upper_ids(value: object) -> tuple[str, ...]:
    return tuple([item.upper() for item in as_str_tuple(value, comma_separated=True)])


def _references(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        # v2.3 to v2.4 flattened a YAML list into one string: "- url\n- url\n".
        lines = (part.strip() for part in value.splitlines())
        return tuple(part[2:].strip() if part.startswith("- ") else part for part in lines if part)
    return as_str_tuple(value)
