"""Findings as SARIF 2.1.0, written as GitHub code scanning reads it, streamed.

One SARIF run, tool driver ``aifr``. Each distinct ``scanner/rule_id`` becomes one rule
(``tool.driver.rules``) and each finding one result pointing at it by ``ruleId`` and
``ruleIndex``. Results come first in the run object and the rules after them: JSON object
members have no order, so the rules can be collected while the results stream out and
memory grows with the number of rules (templates), never with the number of findings.

Levels and GitHub's ``security-severity`` (a rule property GitHub reads to rank alerts):

| severity | level   | security-severity                                       |
|----------|---------|---------------------------------------------------------|
| critical | error   | the CVSS score when it rates critical, else ``9.5``      |
| high     | error   | the CVSS score when it rates high, else ``8.0``          |
| medium   | warning | the CVSS score when it rates medium, else ``5.5``        |
| low      | note    | the CVSS score when it rates low, else ``2.0``           |
| info     | note    | none (not a security alert)                              |
| unknown  | warning | none (unrated is not harmless, but has no score)         |

A URL location is a ``physicalLocation.artifactLocation.uri``; a location that is not a
URL (``host:port``, a DNS name) is a ``logicalLocation`` of kind ``resource``. The
fingerprint goes to ``partialFingerprints`` (GitHub keeps alerts stable with it), and a
finding triaged ``accepted`` or ``false_positive`` carries an external suppression.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

from aifr.findings.models import Finding, TriageState
from aifr.findings.severity import Severity, severity_from_cvss

__all__ = ["SARIF_SCHEMA_URI", "SARIF_VERSION", "sarif_level", "write_sarif"]

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
FINGERPRINT_KEY = "aifrFingerprint/v1"

_LEVELS = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
    Severity.UNKNOWN: "warning",
}
_SCORES = {
    Severity.CRITICAL: 9.5,
    Severity.HIGH: 8.0,
    Severity.MEDIUM: 5.5,
    Severity.LOW: 2.0,
}
_PATH_SAFE = "/:@!$&'()*+,;=%~-._"  # RFC 3986 pchar and "/"
_QUERY_SAFE = _PATH_SAFE + "?"
_HOST_SAFE = "!$&'()*+,;=%~-._"  # RFC 3986 reg-name
_USERINFO_SAFE = _HOST_SAFE + ":"
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def sarif_level(severity: Severity) -> str:
    """The SARIF ``level`` of a severity (see the table in the module docstring)."""
    return _LEVELS[severity]


def write_sarif(
    findings: Iterable[Finding], out: TextIO, *, tool_version: str | None = None
) -> int:
    """Write one SARIF 2.1.0 log of ``findings`` to ``out``; returns how many were written."""
    rules: dict[str, tuple[int, dict[str, Any]]] = {}
    out.write(
        '{"$schema": "' + SARIF_SCHEMA_URI + '", "version": "' + SARIF_VERSION + '", '
        '"runs": [{"results": ['
    )
    count = 0
    for finding in findings:
        rule_key = f"{finding.scanner}/{finding.rule_id}"
        known = rules.get(rule_key)
        if known is None:
            known = (len(rules), _rule(rule_key, finding))
            rules[rule_key] = known
        out.write(",\n" if count else "\n")
        out.write(json.dumps(_result(finding, rule_key, known[0]), ensure_ascii=False))
        count += 1
    driver: dict[str, Any] = {
        "name": "aifr",
        "fullName": "aifr findings (nuclei, feroxbuster, katana results)",
        "rules": [rule for _, rule in sorted(rules.values(), key=lambda item: item[0])],
    }
    if tool_version:
        driver["version"] = tool_version
    out.write("\n], " + '"tool": ' + json.dumps({"driver": driver}, ensure_ascii=False))
    out.write(', "columnKind": "unicodeCodePoints"}]}\n')
    return count


def _rule(rule_key: str, finding: Finding) -> dict[str, Any]:
    level = _LEVELS[finding.severity]
    properties: dict[str, Any] = {"scanner": finding.scanner}
    tags = list(dict.fromkeys(finding.tags))
    score = _security_severity(finding)
    if score is not None:
        properties["security-severity"] = score
        tags.insert(0, "security")
    tags.extend(f"external/cwe/{cwe.lower()}" for cwe in finding.cwe)
    if tags:
        properties["tags"] = list(dict.fromkeys(tags))
    if finding.cve:
        properties["cve"] = list(finding.cve)
    rule: dict[str, Any] = {
        "id": rule_key,
        "name": finding.rule_id,
        "shortDescription": {"text": finding.title},
        "fullDescription": {"text": finding.description or finding.title},
        "defaultConfiguration": {"level": level},
        "properties": properties,
    }
    help_text = _help(finding)
    if help_text:
        rule["help"] = {"text": help_text}
    if finding.rule_url and _is_absolute_url(finding.rule_url):
        rule["helpUri"] = _uri(finding.rule_url)
    return rule


def _security_severity(finding: Finding) -> str | None:
    default = _SCORES.get(finding.severity)
    if default is None:
        return None
    score = finding.cvss_score
    if score is not None and severity_from_cvss(score) is finding.severity:
        return f"{score:.1f}"
    return f"{default:.1f}"


def _help(finding: Finding) -> str:
    parts = []
    if finding.remediation:
        parts.append(f"Remediation: {finding.remediation}")
    if finding.references:
        parts.append("References:\n" + "\n".join(f"- {ref}" for ref in finding.references))
    return "\n\n".join(parts)


def _result(finding: Finding, rule_key: str, rule_index: int) -> dict[str, Any]:
    where = finding.matched_at or finding.url or finding.host or ""
    result: dict[str, Any] = {
        "ruleId": rule_key,
        "ruleIndex": rule_index,
        "level": _LEVELS[finding.severity],
        "message": {"text": f"{finding.title} at {where}" if where else finding.title},
        "partialFingerprints": {FINGERPRINT_KEY: finding.fingerprint},
        "occurrenceCount": finding.occurrences,
        "properties": _result_properties(finding),
    }
    location = _location(finding)
    if location is not None:
        result["locations"] = [location]
    if finding.triage_state in (TriageState.ACCEPTED, TriageState.FALSE_POSITIVE):
        result["suppressions"] = [
            {
                "kind": "external",
                "status": "accepted",
                "justification": f"triaged {finding.triage_state.value} in aifr",
            }
        ]
    return result


def _result_properties(finding: Finding) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "severity": finding.severity.value,
        "scanner": finding.scanner,
        "scannerGeneration": finding.scanner_generation,
        "findingId": finding.id,
        "projectId": finding.project_id,
        "triageState": finding.triage_state.value,
        "firstSeen": finding.first_seen.isoformat(),
        "lastSeen": finding.last_seen.isoformat(),
    }
    optional = {
        "matchedAt": finding.matched_at,
        "host": finding.host,
        "port": finding.port,
        "ip": finding.ip,
        "matcherName": finding.matcher_name,
        "statusCode": finding.status_code,
        "cvssScore": finding.cvss_score,
        "resourceId": finding.resource_id,
    }
    properties.update({k: v for k, v in optional.items() if v is not None})
    if finding.extracted_results:
        properties["extractedResults"] = list(finding.extracted_results)
    if finding.tags:
        properties["tags"] = list(dict.fromkeys(finding.tags))
    return properties


def _location(finding: Finding) -> dict[str, Any] | None:
    for candidate in (finding.url, finding.matched_at):
        if candidate and _is_absolute_url(candidate):
            return {"physicalLocation": {"artifactLocation": {"uri": _uri(candidate)}}}
    name = finding.matched_at or finding.host
    if not name:
        return None
    logical: dict[str, Any] = {"name": name, "kind": "resource"}
    if finding.host and finding.port is not None:
        logical["fullyQualifiedName"] = f"{finding.host}:{finding.port}"
    return {"logicalLocations": [logical]}


def _is_absolute_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return bool(parts.scheme and parts.netloc) and parts.scheme.isascii()


def _uri(value: str) -> str:
    """The URL as an RFC 3986 URI: each part percent-encodes what it may not hold.

    Scanner output carries raw spaces, non-ASCII, brackets in paths and stray ``%``; an
    existing escape (``%2e``) is kept, a ``%`` that starts none is itself escaped.
    """
    parts = urlsplit(_STRAY_PERCENT.sub("%25", value))
    uri = f"{parts.scheme}://{_authority(parts.netloc)}{quote(parts.path, safe=_PATH_SAFE)}"
    if parts.query:
        uri += "?" + quote(parts.query, safe=_QUERY_SAFE)
    if parts.fragment:
        uri += "#" + quote(parts.fragment, safe=_QUERY_SAFE)
    return uri


def _authority(netloc: str) -> str:
    """``[userinfo@]host[:port]`` with each part encoded; a ``:`` that starts no port is escaped."""
    userinfo, at, hostport = netloc.rpartition("@")
    head = quote(userinfo, safe=_USERINFO_SAFE) + "@" if at else ""
    if hostport.startswith("[") and "]" in hostport:
        literal, _, rest = hostport[1:].partition("]")
        host = "[" + quote(literal, safe=":.") + "]"
        port = rest[1:] if rest.startswith(":") else None if rest else ""
    else:
        name, sep, port_text = hostport.rpartition(":")
        host, port = (name, port_text) if sep else (hostport, "")
        host = quote(host, safe=_HOST_SAFE)
    if port is None or not ((port.isascii() and port.isdigit()) or port == ""):
        return head + quote(hostport, safe=_HOST_SAFE)  # no valid port: every ":" escaped
    return head + host + (f":{port}" if port else "")
