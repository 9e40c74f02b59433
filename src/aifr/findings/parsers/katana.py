"""Katana crawl results (generations A and B of FORMATS.md) as parsed findings.

Generation A (v0.0.x) writes flat records (``endpoint``, ``source``, ``tag``...);
generation B (v1.0 and later) nests them under ``request`` and adds ``response``. Both
become one ``crawled-endpoint`` finding shape: the request facts go to
``evidence["request"]`` and the response to ``evidence["response"]`` with header names
normalized (lower case, ``_`` read as ``-``: v1.0 to v1.1.0 wrote ``content_type``). A
record with ``error`` set is a failed request, not an endpoint, and comes back skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pydantic import JsonValue

from aifr.findings.fingerprint import compute_fingerprint
from aifr.findings.location import target_of
from aifr.findings.parsers.values import as_int, as_str, parse_timestamp
from aifr.findings.records import ParsedFinding, ParseProblem, SkippedRecord
from aifr.findings.severity import Severity

__all__ = ["RULE_ID", "katana_generation", "parse_katana"]

SCANNER: Final = "katana"
RULE_ID: Final = "crawled-endpoint"

_FLAT_REQUEST = ("source", "tag", "attribute", "body")
_CONSUMED_A = frozenset({*_FLAT_REQUEST, "timestamp", "endpoint", "method", "error"})
_CONSUMED_B = frozenset({"timestamp", "request", "response", "error"})


def katana_generation(record: Mapping[str, object]) -> str | None:
    """``"B"`` for a nested record, ``"A"`` for a flat one, None when it is not katana's."""
    request = record.get("request")
    if isinstance(request, dict) and "endpoint" in request:
        return "B"
    if "endpoint" in record and (
        "source" in record or "tag" in record or "error" in record or "timestamp" in record
    ):
        return "A"
    return None


def parse_katana(
    record: dict[str, object], line: int
) -> ParsedFinding | SkippedRecord | ParseProblem:
    """One katana record as a finding, a skipped failed request, or a problem."""
    generation = katana_generation(record)
    if generation is None:
        return ParseProblem(line, "not a katana record: no endpoint")
    error = as_str(record.get("error"))
    if error is not None:
        return SkippedRecord(line, SCANNER, "failed_request", f"request failed: {error}")
    if generation == "B":
        request: Mapping[str, object] = record["request"]  # type: ignore[assignment]  # checked by katana_generation
        response = record.get("response")
        consumed = _CONSUMED_B
    else:
        request, response, consumed = record, None, _CONSUMED_A
    endpoint = as_str(request.get("endpoint"))
    if endpoint is None:
        return ParseProblem(line, "katana record whose endpoint is not a string")
    method = as_str(request.get("method"))
    evidence: dict[str, JsonValue] = {}
    request_facts = {
        k: v
        for k, v in request.items()
        if k not in ("endpoint", "method") and (generation == "B" or k in _FLAT_REQUEST)
    }
    if request_facts:
        evidence["request"] = request_facts  # type: ignore[assignment]  # JSON values
    status = None
    if isinstance(response, dict):
        evidence["response"] = _normalized_response(response)  # type: ignore[assignment]  # JSON values
        status = as_int(response.get("status_code"))
    elif response is not None:
        evidence["response"] = response  # type: ignore[assignment]  # a JSON value
    target = target_of(endpoint)
    return ParsedFinding(
        line=line,
        scanner=SCANNER,
        scanner_generation=generation,
        rule_id=RULE_ID,
        title=f"{method or 'GET'} {endpoint}",
        severity=Severity.INFO,
        fingerprint=compute_fingerprint(
            SCANNER, RULE_ID, target.location, ((method or "GET").upper(),)
        ),
        url=target.url,
        host=target.host,
        port=target.port,
        scheme=target.scheme,
        path=target.path,
        method=method,
        matched_at=endpoint,
        status_code=status,
        evidence=evidence,
        observed_at=parse_timestamp(record.get("timestamp")),
        raw={k: v for k, v in record.items() if k not in consumed},  # type: ignore[misc]  # JSON values
    )


def _normalized_response(response: Mapping[str, object]) -> dict[str, object]:
    out = dict(response)
    headers = response.get("headers")
    if isinstance(headers, dict):
        out["headers"] = {str(k).lower().replace("_", "-"): v for k, v in headers.items()}
    return out
