"""Feroxbuster ``--json`` records as parsed findings.

Only ``response`` records with ``wildcard: false`` are discoveries; ``statistics``,
``configuration`` and ``log`` records describe the run and come back as skipped records
(the configuration line also tells the scanner version, kept for the findings after it).
A ``ferox-*.state`` file, written on Ctrl+C, is one JSON object holding the responses of
the interrupted scan; they are read as if they had been ``response`` lines.
The generation names the first release whose record shape this is, read from the keys
that release added (``v1.7``, ``v2.5``, ``v2.6``, ``v2.10.3``, ``v2.12``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final, cast

from pydantic import JsonValue

from aifr.findings.fingerprint import compute_fingerprint
from aifr.findings.location import target_of
from aifr.findings.parsers.values import as_int, as_str, parse_timestamp
from aifr.findings.records import ParsedFinding, ParseEvent, ParseProblem, SkippedRecord
from aifr.findings.severity import Severity

__all__ = ["RULE_ID", "FeroxbusterParser", "feroxbuster_generation", "is_state_file"]

SCANNER: Final = "feroxbuster"
RULE_ID: Final = "content-discovery"

_EVIDENCE = (
    "original_url",
    "content_length",
    "line_count",
    "word_count",
    "headers",
    "extension",
    "truncated",
)
_CONSUMED = frozenset({*_EVIDENCE, "type", "url", "path", "wildcard", "status", "method"})
_CONSUMED_TS = _CONSUMED | {"timestamp"}
_RUN_KINDS = {
    "statistics": "run statistics, not a finding",
    "configuration": "run configuration, not a finding",
    "log": "debug log message, not a finding",
}


def is_state_file(record: Mapping[str, object]) -> bool:
    """Whether a record is a whole ``ferox-*.state`` file (written on Ctrl+C), not a line."""
    return (
        "type" not in record
        and isinstance(record.get("responses"), list)
        and ("scans" in record or "config" in record or "statistics" in record)
    )


def feroxbuster_generation(record: Mapping[str, object]) -> str | None:
    """The generation of a feroxbuster record (``v1.7`` ... ``v2.12``), None if it is not one.

    A whole state file is generation ``state``; its responses carry their own.
    """
    if is_state_file(record):
        return "state"
    kind = record.get("type")
    if kind == "response":
        return _response_generation(record)
    if kind == "statistics" and ("requests" in record or "total_scans" in record):
        if "certificate_errors" in record:
            return "v2.12"
        if "targets" in record:
            return "v2.10.3"
        return "v2.7" if "extensions_collected" in record else "v1.7"
    if kind == "configuration" and ("wordlist" in record or "target_url" in record):
        return "v2.10.3"
    if kind == "log" and "message" in record and ("level" in record or "module" in record):
        return "v1.7"
    return None


def _response_generation(record: Mapping[str, object]) -> str | None:
    if "url" not in record or ("status" not in record and "wildcard" not in record):
        return None
    if "truncated" in record:
        return "v2.12"
    if "timestamp" in record:
        return "v2.10.3"
    if "extension" in record:
        return "v2.6"
    if "original_url" in record or "method" in record:
        return "v2.5"
    return "v1.7"


class FeroxbusterParser:
    """Parses the records of one feroxbuster output, remembering its configuration line."""

    def __init__(self) -> None:
        self.version: str | None = None

    def parse_state(self, record: dict[str, object], line: int) -> Iterator[ParseEvent]:
        """The responses kept in a ``ferox-*.state`` file, each as a ``response`` line would be.

        The state file is one JSON object (``scans``, ``config``, ``responses``,
        ``statistics``); its ``config`` tells the version like a configuration line does.
        """
        config = record.get("config")
        if isinstance(config, dict):
            self.parse({**config, "type": "configuration"}, line)
        responses = cast(list[object], record.get("responses"))
        yield SkippedRecord(
            line,
            SCANNER,
            "state",
            f"feroxbuster state file: {len(responses)} responses read, scans and statistics skipped",
        )
        for response in responses:
            if isinstance(response, dict):
                yield self.parse({"type": "response", **response}, line)
            else:
                yield ParseProblem(line, "a state file response that is not a JSON object")

    def parse(
        self, record: dict[str, object], line: int
    ) -> ParsedFinding | SkippedRecord | ParseProblem:
        """One record as a finding, a skipped run record, or the problem that keeps it out."""
        generation = feroxbuster_generation(record)
        kind = record.get("type")
        if generation is None or generation == "state":
            return ParseProblem(line, f"not a feroxbuster record (type {kind!r})")
        if kind != "response":
            if kind == "configuration":
                agent = as_str(record.get("user_agent")) or ""
                if agent.startswith("feroxbuster/"):
                    self.version = agent.partition("/")[2] or None
            return SkippedRecord(line, SCANNER, str(kind), _RUN_KINDS[str(kind)])
        if record.get("wildcard") is True:
            return SkippedRecord(
                line, SCANNER, "response", "wildcard response (matched the wildcard filter)"
            )
        url = as_str(record.get("url"))
        if url is None:
            return ParseProblem(line, "feroxbuster response without a url")
        return self._finding(record, line, generation, url)

    def _finding(
        self, record: dict[str, object], line: int, generation: str, url: str
    ) -> ParsedFinding:
        target = target_of(url)
        method = as_str(record.get("method"))
        status = as_int(record.get("status"))
        path = as_str(record.get("path")) or target.path or url
        observed = parse_timestamp(record.get("timestamp"))
        consumed = _CONSUMED_TS if observed is not None else _CONSUMED
        raw: dict[str, JsonValue] = {k: v for k, v in record.items() if k not in consumed}  # type: ignore[misc]  # JSON values
        evidence: dict[str, JsonValue] = {}
        for key in _EVIDENCE:
            if key in record:
                evidence[key] = record[key]  # type: ignore[assignment]  # a JSON value
        return ParsedFinding(
            line=line,
            scanner=SCANNER,
            scanner_generation=generation,
            scanner_version=self.version,
            rule_id=RULE_ID,
            title=f"{path} ({status})" if status is not None else path,
            severity=Severity.INFO,
            fingerprint=compute_fingerprint(
                SCANNER, RULE_ID, target.location, ((method or "GET").upper(),)
            ),
            url=url,
            host=target.host,
            port=target.port,
            scheme=target.scheme,
            path=path,
            method=method,
            matched_at=url,
            status_code=status,
            evidence=evidence,
            observed_at=observed,
            raw=raw,
        )
