"""Findings import: what a different storage shape could save, measured before building it.

Run: ``.venv/bin/python -m benchmarks.findings_shape_probe --lines 100000``. Prints CPU
seconds (``time.process_time``, steadier than wall time on a shared host) of, in one
process with the cyclic collector paused, alternating:

- ``floor``: the findings benchmark's floor (stdlib ``json``, one ``executemany`` of 4
  columns in one transaction);
- ``full``: the nuclei parser as it is (every field mapped), each record's document
  stored as one orjson blob beside 13 indexed or deduplicated columns, the same upsert
  as the store, 10,000 rows per transaction. The lower bound of "store the record,
  derive the other fields on read" with the parser unchanged;
- ``keys``: only what the store must index or deduplicate, taken with the parser's own
  pieces (generation, template id, the per-template facts cache for the severity, the
  location, the fingerprint) and the original line stored as is. The lower bound of
  that shape with a second, key-only parse path; no importer, resource linking, reader
  checks or summary around it, so a real import would cost more.

Nothing here is the product; it only prices the approach (docs/benchmarks.md,
"Findings import: where the time goes").
"""

from __future__ import annotations

import argparse
import gc
import json
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from aifr.findings.fingerprint import compute_fingerprint
from aifr.findings.location import Target, target_of
from aifr.findings.models import finding_id
from aifr.findings.parsers.nuclei import NucleiParser, nuclei_generation
from aifr.findings.parsers.nuclei_rule import RuleFactsCache
from aifr.findings.records import ParsedFinding
from benchmarks.findings_bench import generate

_UPSERT = (
    "INSERT INTO findings (id, project_id, run_id, last_run_id, scanner, severity, rule_id, "
    "host, resource_id, triage_state, first_seen, last_seen, occurrences, record) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET last_run_id = excluded.last_run_id, "
    "last_seen = MAX(findings.last_seen, excluded.last_seen), "
    "occurrences = findings.occurrences + excluded.occurrences, "
    "resource_id = COALESCE(findings.resource_id, excluded.resource_id)"
)
_TABLE = (
    "CREATE TABLE findings (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
    "project_id TEXT NOT NULL, run_id TEXT NOT NULL, last_run_id TEXT NOT NULL, "
    "scanner TEXT NOT NULL, severity TEXT NOT NULL, rule_id TEXT NOT NULL, host TEXT, "
    "resource_id TEXT, triage_state TEXT NOT NULL, first_seen TEXT NOT NULL, "
    "last_seen TEXT NOT NULL, occurrences INTEGER NOT NULL, record BLOB NOT NULL)"
)
_SEEN = "2026-11-25T10:00:00+00:00"
_BATCH = 10_000
Row = tuple[object, ...]


def floor(source: Path, db: Path) -> int:
    """The findings benchmark's floor; returns the rows written."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE rows (id INTEGER PRIMARY KEY, template TEXT, host TEXT, "
        "severity TEXT, doc TEXT)"
    )
    count = 0

    def rows() -> Iterator[Row]:
        nonlocal count
        with source.open(encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                count += 1
                yield (record["template-id"], record.get("host"), record["info"]["severity"], line)

    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO rows (template, host, severity, doc) VALUES (?, ?, ?, ?)", rows())
    conn.execute("COMMIT")
    conn.close()
    return count


def _full_rows(source: Path) -> Iterator[Row]:
    parser = NucleiParser()
    with source.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            record = orjson.loads(line)
            parsed = parser.parse(record, number)
            if not isinstance(parsed, ParsedFinding):
                continue
            yield (
                finding_id("bench", parsed.fingerprint),
                parsed.severity.value,
                parsed.rule_id,
                parsed.host,
                orjson.dumps(record),
            )


def _key_rows(source: Path) -> Iterator[Row]:
    rules = RuleFactsCache()
    targets: dict[str, Target] = {}
    with source.open("rb") as lines:
        for line in lines:
            record = orjson.loads(line)
            if nuclei_generation(record) != "C":
                continue
            rule_id = record.get("template-id")
            if rule_id.__class__ is not str or not rule_id.strip():
                continue
            rule_id = rule_id.strip()
            info = record.get("info")
            facts = rules.facts(info if info.__class__ is dict else {}, rule_id)
            where = record.get("matched-at") or record.get("url") or record.get("host")
            target = targets.get(where)
            if target is None:
                target = targets[where] = target_of(where)
            matcher, extractor = (
                record.get("matcher-name") or "",
                record.get("extractor-name") or "",
            )
            extracted = record.get("extracted-results")
            qualifiers = (
                (matcher, extractor, *sorted(extracted)) if extracted else (matcher, extractor)
            )
            fingerprint = compute_fingerprint("nuclei", rule_id, target.location, qualifiers)
            yield (
                finding_id("bench", fingerprint),
                facts.severity.value,
                rule_id,
                target.host,
                line,
            )


def shaped(source: Path, db: Path, *, keys_only: bool) -> int:
    """Import with the probed storage shape; returns the rows written."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -65536")
    conn.execute(_TABLE)
    count = 0
    batch: list[Row] = []

    def flush() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_UPSERT, batch)
        conn.execute("COMMIT")
        batch.clear()

    for fid, severity, rule_id, host, blob in (_key_rows if keys_only else _full_rows)(source):
        fixed = ("bench", "r1", "r1", "nuclei")
        batch.append((fid, *fixed, severity, rule_id, host, None, "open", _SEEN, _SEEN, 1, blob))
        count += 1
        if len(batch) >= _BATCH:
            flush()
    if batch:
        flush()
    conn.close()
    return count


def main() -> None:
    """Measure each side ``--rounds`` times, alternating, and print CPU seconds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    gc.disable()
    with tempfile.TemporaryDirectory(prefix="aifr-shape-probe-") as tmp:
        work = Path(tmp)
        source = work / "nuclei.jsonl"
        generate(source, args.lines)
        for round_ in range(args.rounds):
            seconds: dict[str, float] = {}
            for tag in ("floor", "full", "keys"):
                db = work / f"{tag}-{round_}.db"
                start = time.process_time()
                count = (
                    floor(source, db)
                    if tag == "floor"
                    else shaped(source, db, keys_only=tag == "keys")
                )
                seconds[tag] = time.process_time() - start
                if count != args.lines:
                    raise SystemExit(f"{tag} wrote {count} of {args.lines} rows")
            print(
                f"round {round_ + 1}: floor {seconds['floor']:.2f} CPU s; "
                f"full parse + record blob {seconds['full']:.2f} "
                f"({seconds['full'] / seconds['floor']:.2f}x); "
                f"keys only + line {seconds['keys']:.2f} "
                f"({seconds['keys'] / seconds['floor']:.2f}x)",
                flush=True,
            )


if __name__ == "__main__":
    main()
