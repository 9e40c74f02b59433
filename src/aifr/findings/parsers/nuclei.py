"""Nuclei results (generations A, B and C of FORMATS.md) as parsed findings.

The generation is read from each record's keys: ``template-id`` is C (v2.5.3 and later),
``templateID`` is B (v2.3 to v2.5.2), and a ``template`` with the info keys at the top
level and no ``info`` object is A (v2.0 to v2.2). The three spell the same facts
differently; the mapping below gives one finding shape (and one fingerprint) for all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pydantic import JsonValue

from aifr.findings.fingerprint import compute_fingerprint
from aifr.findings.location import target_of
from aifr.findings.parsers.values import as_float, as_int, as_str, as_str_tuple, parse_timestamp
from aifr.findings.records import ParsedFinding, ParseProblem
from aifr.findings.severity import normalize_severity

__all__ = ["nuclei_generation", "parse_nuclei"]

SCANNER: Final = "nuclei"


class _Names:
    """The key each generation uses for one meaning."""

    __slots__ = ("extracted", "extractor", "matched", "matcher", "rule")

    def __init__(self, rule: str, matched: str, matcher: str, extractor: str, extracted: str):
        self.rule = rule
        self.matched = matched
        self.matcher = matcher
        self.extractor = extractor
        self.extracted = extracted


_GEN_A = _Names("template", "matched", "matcher_name", "extractor_name", "extracted_results")
_GEN_B = _Names("templateID", "matched", "matcher_name", "extractor_name", "extracted_results")
_GEN_C = _Names("template-id", "matched-at", "matcher-name", "extractor-name", "extracted-results")

# Keys copied into ``evidence`` as written: what the scanner observed for this result.
_EVIDENCE = (
    "type",
    "host",
    "port",
    "scheme",
    "url",
    "request",
    "response",
    "curl-command",
    "matched-line",
    "meta",
    "interaction",
    "matcher-status",
)
# Info keys mapped to finding fields or to rule_metadata; other info keys go to raw.
_INFO_KEYS = frozenset(
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
_CLASSIFICATION_KEYS = frozenset({"cve-id", "cwe-id", "cvss-metrics", "cvss-score"})
_TOP_KEYS = frozenset(
    {
        *_EVIDENCE,
        "info",
        "template",
        "template-id",
        "templateID",
        "template-url",
        "template-path",
        "ip",
        "timestamp",
        "matched-at",
        "matched",
        "matcher-name",
        "matcher_name",
        "extractor-name",
        "extractor_name",
        "extracted-results",
        "extracted_results",
    }
)
_GEN_A_KEYS = _TOP_KEYS | _INFO_KEYS
# Keys whose value must be a string to be mapped; another type is kept in raw instead.
_STRING_KEYS = (
    "host",
    "url",
    "ip",
    "template-url",
    "timestamp",
    "matched-at",
    "matched",
    "matcher-name",
    "matcher_name",
    "extractor-name",
    "extractor_name",
)


def nuclei_generation(record: Mapping[str, object]) -> str | None:
    """``"A"``, ``"B"`` or ``"C"`` when the record is a nuclei result, else None."""
    if "template-id" in record:
        return "C"
    if "templateID" in record:
        return "B"
    if (
        "template" in record
        and "info" not in record
        and ("matched" in record or "severity" in record or "name" in record)
    ):
        return "A"
    return None


def parse_nuclei(record: dict[str, object], line: int) -> ParsedFinding | ParseProblem:
    """One nuclei result as a parsed finding, or the problem that keeps it out."""
    generation = nuclei_generation(record)
    if generation is None:
        return ParseProblem(line, "not a nuclei result: no template-id, templateID or template")
    names = _GEN_C if generation == "C" else _GEN_B if generation == "B" else _GEN_A
    rule_id = record.get(names.rule)
    if not isinstance(rule_id, str) or not rule_id.strip():
        return ParseProblem(line, f"nuclei result without a template id ({names.rule!r})")
    rule_id = rule_id.strip()
    if generation == "A":
        info: Mapping[str, object] = record
        raw = {k: v for k, v in record.items() if k not in _GEN_A_KEYS}
    else:
        found = record.get("info")
        info = found if isinstance(found, dict) else {}
        raw = {k: v for k, v in record.items() if k not in _TOP_KEYS}
        if found is not None and not isinstance(found, dict):
            raw["info"] = found
        extra_info = {k: v for k, v in info.items() if k not in _INFO_KEYS}
        if extra_info:
            raw["info"] = extra_info
    for key in _STRING_KEYS:
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            raw[key] = value
    return _build(record, info, generation, names, rule_id, line, raw)  # type: ignore[arg-type]  # JSON values


def _build(
    record: dict[str, object],
    info: Mapping[str, object],
    generation: str,
    names: _Names,
    rule_id: str,
    line: int,
    raw: dict[str, JsonValue],
) -> ParsedFinding:
    matched_at = as_str(record.get(names.matched))
    url_field = as_str(record.get("url"))
    host_field = as_str(record.get("host"))
    target = target_of(matched_at or url_field or host_field)
    host = target.host or target_of(host_field).host
    port = target.port if target.port is not None else as_int(record.get("port"))
    matcher = as_str(record.get(names.matcher))
    extractor = as_str(record.get(names.extractor))
    extracted = _strings(record.get(names.extracted))
    classification = info.get("classification")
    cls: Mapping[str, object] = classification if isinstance(classification, dict) else {}
    severity_value = info.get("severity")
    evidence: dict[str, JsonValue] = {k: record[k] for k in _EVIDENCE if k in record}  # type: ignore[misc]  # JSON values
    return ParsedFinding(
        line=line,
        scanner=SCANNER,
        scanner_generation=generation,
        rule_id=rule_id,
        title=as_str(info.get("name")) or rule_id,
        severity=normalize_severity(severity_value),
        fingerprint=compute_fingerprint(
            SCANNER, rule_id, target.location, (matcher or "", extractor or "", *sorted(extracted))
        ),
        description=as_str(info.get("description")),
        scanner_severity=_spelling(severity_value),
        cvss_score=_score(cls.get("cvss-score")),
        cvss_vector=as_str(cls.get("cvss-metrics")),
        url=target.url,
        host=host,
        port=port if port is None or 0 <= port <= 65535 else None,
        scheme=target.scheme,
        path=target.path,
        method=_method(record.get("request")),
        matched_at=matched_at,
        ip=_ip(record.get("ip")),
        matcher_name=matcher,
        extractor_name=extractor,
        extracted_results=extracted,
        status_code=_status(record.get("response")),
        evidence=evidence,
        references=_references(info.get("reference")),
        cwe=tuple(_upper_ids(cls.get("cwe-id"))),
        cve=tuple(_upper_ids(cls.get("cve-id"))),
        tags=as_str_tuple(info.get("tags"), comma_separated=True),
        remediation=as_str(info.get("remediation")),
        rule_url=as_str(record.get("template-url")),
        rule_metadata=_rule_metadata(record, info, cls, generation),
        observed_at=parse_timestamp(record.get("timestamp")),
        raw=raw,
    )


def _rule_metadata(
    record: Mapping[str, object],
    info: Mapping[str, object],
    cls: Mapping[str, object],
    generation: str,
) -> dict[str, JsonValue]:
    meta: dict[str, JsonValue] = {}
    authors = as_str_tuple(info.get("author"), comma_separated=True)
    if authors:
        meta["author"] = list(authors)
    if generation != "A" and "template" in record:
        meta["template"] = record["template"]  # type: ignore[assignment]  # a JSON value
    for key in ("template-path",):
        if key in record:
            meta[key] = record[key]  # type: ignore[assignment]  # a JSON value
    for key in ("metadata", "impact"):
        if key in info:
            meta[key] = info[key]  # type: ignore[assignment]  # a JSON value
    rest = {k: v for k, v in cls.items() if k not in _CLASSIFICATION_KEYS}
    if rest:
        meta["classification"] = rest  # type: ignore[assignment]  # JSON values
    return meta


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(item if isinstance(item, str) else str(item) for item in value)


def _spelling(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _score(value: object) -> float | None:
    score = as_float(value)
    return score if score is not None and 0.0 <= score <= 10.0 else None


def _upper_ids(value: object) -> list[str]:
    return [item.upper() for item in as_str_tuple(value, comma_separated=True)]


def _references(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        # v2.3 to v2.4 flattened a YAML list into one string: "- url\n- url\n".
        lines = (part.strip() for part in value.splitlines())
        return tuple(part[2:].strip() if part.startswith("- ") else part for part in lines if part)
    return as_str_tuple(value)


def _ip(value: object) -> str | None:
    text = as_str(value)
    return text.rstrip(".") if text else None


def _method(request: object) -> str | None:
    if not isinstance(request, str):
        return None
    space = request.find(" ", 0, 12)
    token = request[:space] if space > 0 else ""
    return token if token.isalpha() and token.isupper() else None


def _status(response: object) -> int | None:
    if isinstance(response, str) and response.startswith("HTTP/"):
        code = response.partition(" ")[2][:3]
        return int(code) if code.isdigit() else None
    return None
