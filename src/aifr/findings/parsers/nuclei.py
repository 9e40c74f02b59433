"""Nuclei results (generations A, B and C of FORMATS.md) as parsed findings.

The generation is read from each record's keys: ``template-id`` is C (v2.5.3 and later),
``templateID`` is B (v2.3 to v2.5.2), and a ``template`` with the info keys at the top
level and no ``info`` object is A (v2.0 to v2.2). The three spell the same facts
differently; the mapping below gives one finding shape (and one fingerprint) for all.

A :class:`NucleiParser` lives for one stream and remembers two things to stay fast on
files of millions of results: the facts derived from each template's ``info``
(:mod:`~aifr.findings.parsers.nuclei_rule`) and the split of recently seen locations
(one URL is usually reported by many templates). Both are bounded and neither changes
what a record parses to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final, cast

import msgspec
import orjson
from msgspec import UNSET, UnsetType
from pydantic import JsonValue

from aifr.findings.fingerprint import FINGERPRINT_VERSION
from aifr.findings.location import Target, target_of
from aifr.findings.parsers.nuclei_rule import INFO_KEYS, RuleFacts, RuleFactsCache
from aifr.findings.parsers.values import as_int, parse_timestamp
from aifr.findings.records import ParsedFinding, ParseProblem

__all__ = ["NucleiParser", "nuclei_generation"]

SCANNER: Final = "nuclei"
_TARGET_LIMIT: Final = 4096  # locations remembered per stream (cleared when full)
# What compute_fingerprint's text starts with for every nuclei result; a test holds the
# text written out in NucleiParser._finish equal to compute_fingerprint's.
_FINGERPRINT_PREFIX: Final = f"{FINGERPRINT_VERSION}\x1f{SCANNER}\x1f"
_sha256: Final = hashlib.sha256


class _Names:
    """The key each generation uses for one meaning."""

    __slots__ = ("extracted", "extractor", "matched", "matcher", "rule", "texts")

    def __init__(self, rule: str, matched: str, matcher: str, extractor: str, extracted: str):
        self.rule = rule
        self.matched = matched
        self.matcher = matcher
        self.extractor = extractor
        self.extracted = extracted
        # The string fields read per record, in the order NucleiParser unpacks them.
        self.texts = (matched, "host", "url", matcher, extractor, "ip", "template-url")


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
_GEN_A_KEYS = _TOP_KEYS | INFO_KEYS


class _LineC(msgspec.Struct, forbid_unknown_fields=True, rename="kebab"):
    """A generation C result with only the keys the mapping reads (the typed fast path).

    A line with any other key, a text field of another type, no ``info`` or a repeated
    key the fast path cannot see is refused by the decoder and parsed as before.
    """

    template_id: str
    info: msgspec.Raw
    template: Any = UNSET
    template_path: Any = UNSET
    template_url: str | None = None
    matched_at: str | None = None
    host: str | UnsetType | None = UNSET
    url: str | UnsetType | None = UNSET
    matcher_name: str | None = None
    extractor_name: str | None = None
    ip: str | None = None
    extracted_results: Any = None
    timestamp: Any = None
    type: Any = UNSET
    port: Any = UNSET
    scheme: Any = UNSET
    request: Any = UNSET
    response: Any = UNSET
    curl_command: Any = UNSET
    matched_line: Any = UNSET
    meta: Any = UNSET
    interaction: Any = UNSET
    matcher_status: Any = UNSET


_DECODE_C: Final = msgspec.json.Decoder(_LineC).decode
_INFO_LIMIT: Final = 4096  # (template id, info bytes) pairs remembered per stream


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


class NucleiParser:
    """Parses the results of one nuclei output stream (any generation, mixed)."""

    __slots__ = ("_infos", "_rules", "_targets")

    def __init__(self) -> None:
        self._rules = RuleFactsCache()
        self._targets: dict[str, Target] = {}
        self._infos: dict[tuple[str, bytes], RuleFacts] = {}

    def parse_line(self, data: bytes, line: int) -> ParsedFinding | None:
        """The typed fast path: one line of JSON Lines, or None to parse it as before.

        Only for a line the reader would decode with orjson as it is (no integer of 19
        digits or more, no surrogate or NUL escape: the reader checks before calling). A
        generation C result with known keys only is decoded into :class:`_LineC`, its
        ``info`` kept as bytes (the facts are cached by them); anything else returns None
        and the line takes the general path, so problems and values do not depend on this
        one. A test runs every nuclei sample through both and requires equal results.
        """
        try:
            rec = _DECODE_C(data)
        except (msgspec.DecodeError, ValueError):
            return None
        rule_id = rec.template_id
        if not rule_id.strip():
            return None
        rule_id = rule_id.strip()
        key = (rule_id, bytes(rec.info))
        facts = self._infos.get(key)
        if facts is None:
            info = orjson.loads(key[1])
            if info.__class__ is not dict:
                return None
            facts = self._rules.facts(info, rule_id)
            if len(self._infos) >= _INFO_LIMIT:
                self._infos.clear()
            self._infos[key] = facts
        raw: dict[str, JsonValue] = {}
        if facts.extra_info is not None:
            raw["info"] = dict(facts.extra_info)
        metadata: dict[str, JsonValue] = {}
        if rec.template is not UNSET:
            metadata["template"] = rec.template
        if rec.template_path is not UNSET:
            metadata["template-path"] = rec.template_path
        evidence = _evidence_c(rec)
        host, url, port, request, response = rec.host, rec.url, rec.port, rec.request, rec.response
        texts = (
            rec.matched_at,
            None if host is UNSET else host,
            None if url is UNSET else url,
            rec.matcher_name,
            rec.extractor_name,
            rec.ip,
            rec.template_url,
        )
        return self._finish(
            facts,
            "C",
            rule_id,
            line,
            raw,
            texts,
            None if port is UNSET else port,
            rec.extracted_results,
            rec.timestamp,
            metadata,
            None if request is UNSET else request,
            None if response is UNSET else response,
            evidence,
        )

    def parse(self, record: dict[str, object], line: int) -> ParsedFinding | ParseProblem:
        """One nuclei result as a parsed finding, or the problem that keeps it out."""
        generation = nuclei_generation(record)
        if generation is None:
            return ParseProblem(line, "not a nuclei result: no template-id, templateID or template")
        names = _GEN_C if generation == "C" else _GEN_B if generation == "B" else _GEN_A
        rule_id = record.get(names.rule)
        if rule_id.__class__ is not str or not rule_id.strip():
            return ParseProblem(line, f"nuclei result without a template id ({names.rule!r})")
        rule_id = rule_id.strip()
        raw: dict[str, JsonValue]
        if generation == "A":
            facts = RuleFacts(record, rule_id)
            raw = _rest(record, _GEN_A_KEYS)
        else:
            found = record.get("info")
            info: Mapping[str, object] = found if found.__class__ is dict else {}
            facts = self._rules.facts(info, rule_id)
            raw = _rest(record, _TOP_KEYS)
            if found is not None and found.__class__ is not dict:
                raw["info"] = found  # type: ignore[assignment]  # a JSON value
            elif facts.extra_info is not None:
                raw["info"] = dict(facts.extra_info)
        return self._build(record, facts, generation, names, rule_id, line, raw)

    def _target(self, value: str | None) -> Target:
        if value is None:
            return target_of(None)
        found = self._targets.get(value)
        if found is None:
            found = target_of(value)
            if len(self._targets) >= _TARGET_LIMIT:
                self._targets.clear()
            self._targets[value] = found
        return found

    def _build(
        self,
        record: dict[str, object],
        facts: RuleFacts,
        generation: str,
        names: _Names,
        rule_id: str,
        line: int,
        raw: dict[str, JsonValue],
    ) -> ParsedFinding:
        get = record.get
        m, h, u = get(names.matched), get("host"), get("url")
        mn, en, ip_, tu = get(names.matcher), get(names.extractor), get("ip"), get("template-url")
        if (
            (m is None or m.__class__ is str)
            and (h is None or h.__class__ is str)
            and (u is None or u.__class__ is str)
            and (mn is None or mn.__class__ is str)
            and (en is None or en.__class__ is str)
            and (ip_ is None or ip_.__class__ is str)
            and (tu is None or tu.__class__ is str)
        ):
            texts = cast("tuple[str | None, ...]", (m, h, u, mn, en, ip_, tu))
        else:  # rare: a value of another type is kept in raw and not mapped
            texts = tuple(_text(record, key, raw) for key in names.texts)
        metadata: dict[str, JsonValue] = {}
        if generation != "A" and "template" in record:
            metadata["template"] = record["template"]  # type: ignore[assignment]  # a JSON value
        if "template-path" in record:
            metadata["template-path"] = record["template-path"]  # type: ignore[assignment]  # a JSON value
        return self._finish(
            facts,
            generation,
            rule_id,
            line,
            raw,
            texts,
            get("port"),
            get(names.extracted),
            get("timestamp"),
            metadata,
            get("request"),
            get("response"),
            {k: record[k] for k in _EVIDENCE if k in record},  # type: ignore[misc]  # JSON values
        )

    def _finish(
        self,
        facts: RuleFacts,
        generation: str,
        rule_id: str,
        line: int,
        raw: dict[str, JsonValue],
        texts: tuple[str | None, ...],
        port_value: object,
        extracted_value: object,
        stamp: object,
        metadata: dict[str, JsonValue],
        request: object,
        response: object,
        evidence: dict[str, JsonValue],
    ) -> ParsedFinding:
        matched_at, host_field, url_field, matcher, extractor, ip, rule_url = texts
        matched_at = matched_at or None
        host_field = host_field or None
        matcher = matcher or None
        extractor = extractor or None
        target = self._target(matched_at or url_field or host_field)
        host = target.host or target_of(host_field).host
        port = target.port if target.port is not None else as_int(port_value)
        extracted = _strings(extracted_value)
        observed = parse_timestamp(stamp)
        if observed is None and stamp is not None:
            raw["timestamp"] = stamp  # type: ignore[assignment]  # a JSON value
        # compute_fingerprint's text, written out: the prefix is constant, and the
        # qualifiers are the matcher, the extractor and the sorted extracted results.
        text = f"{_FINGERPRINT_PREFIX}{rule_id}\x1f{target.location}\x1f{matcher or ''}\x1f{extractor or ''}"
        if extracted:
            text = "\x1f".join((text, *sorted(extracted)))
        metadata.update(facts.metadata)
        return ParsedFinding(
            line=line,
            scanner=SCANNER,
            scanner_generation=generation,
            rule_id=rule_id,
            title=facts.title,
            severity=facts.severity,
            fingerprint=_sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
            description=facts.description,
            scanner_severity=facts.scanner_severity,
            cvss_score=facts.cvss_score,
            cvss_vector=facts.cvss_vector,
            url=target.url,
            host=host,
            port=port if port is None or 0 <= port <= 65535 else None,
            scheme=target.scheme,
            path=target.path,
            method=_method(request),
            matched_at=matched_at,
            ip=ip.rstrip(".") if ip else None,
            matcher_name=matcher,
            extractor_name=extractor,
            extracted_results=extracted,
            status_code=_status(response),
            evidence=evidence,
            references=facts.references,
            cwe=facts.cwe,
            cve=facts.cve,
            tags=facts.tags,
            remediation=facts.remediation,
            rule_url=rule_url or None,
            rule_metadata=metadata,
            observed_at=observed,
            raw=raw,
        )


def _evidence_c(rec: _LineC) -> dict[str, JsonValue]:
    """The evidence members present in a generation C line, in :data:`_EVIDENCE` order.

    One test per key: half the cost of a comprehension over a zip of the twelve.
    """
    evidence: dict[str, JsonValue] = {}
    if rec.type is not UNSET:
        evidence["type"] = rec.type
    if rec.host is not UNSET:
        evidence["host"] = rec.host
    if rec.port is not UNSET:
        evidence["port"] = rec.port
    if rec.scheme is not UNSET:
        evidence["scheme"] = rec.scheme
    if rec.url is not UNSET:
        evidence["url"] = rec.url
    if rec.request is not UNSET:
        evidence["request"] = rec.request
    return _more_evidence_c(rec, evidence)


def _more_evidence_c(rec: _LineC, evidence: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """:func:`_evidence_c`, continued (the second half of :data:`_EVIDENCE`)."""
    if rec.response is not UNSET:
        evidence["response"] = rec.response
    if rec.curl_command is not UNSET:
        evidence["curl-command"] = rec.curl_command
    if rec.matched_line is not UNSET:
        evidence["matched-line"] = rec.matched_line
    if rec.meta is not UNSET:
        evidence["meta"] = rec.meta
    if rec.interaction is not UNSET:
        evidence["interaction"] = rec.interaction
    if rec.matcher_status is not UNSET:
        evidence["matcher-status"] = rec.matcher_status
    return evidence


def _rest(record: dict[str, object], known: frozenset[str]) -> dict[str, JsonValue]:
    """The record's members under keys the mapping does not read (none, most of the time)."""
    if known.issuperset(record):  # one pass in C; the comprehension only when some are left
        return {}
    return {k: v for k, v in record.items() if k not in known}  # type: ignore[misc]  # JSON values


def _text(record: Mapping[str, object], key: str, raw: dict[str, JsonValue]) -> str | None:
    """A non-empty string field; a value of another type is kept in ``raw`` instead."""
    value = record.get(key)
    if value.__class__ is str:
        return value or None
    if value is not None:
        raw[key] = value  # type: ignore[assignment]  # a JSON value
    return None


def _strings(value: object) -> tuple[str, ...]:
    if value.__class__ is not list:
        return ()
    return tuple([item if item.__class__ is str else str(item) for item in value])


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
