"""Findings import: a generated Nuclei JSONL file into SQLite, aifr vs a stdlib floor.

Run: ``.venv/bin/python -m benchmarks findings`` (``--lines 100000,1000000``). Writes the
"## Findings import" section of docs/benchmarks.md.

The floor reads the same lines with the stdlib ``json`` module and inserts one row per
line (id, template, host, severity, the line) with one ``executemany`` in one
transaction: the least an import into SQLite costs in CPython. aifr runs
``import_findings`` (detect, parse every field, normalize severity, fingerprint, link
resources, dedupe upsert, run links) on the project's store. Each side runs in a fresh
child process, which reports its own peak RSS (``ru_maxrss``), in alternating rounds.

Issue 22 goals: at least 50,000 records/s, within 2x of the floor, peak RSS under
200 MB whatever the file size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import sqlite3
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Findings import"
SEVERITIES = ("info", "low", "medium", "high", "critical", "unknown")
BATCH = 50_000  # findings per transaction at most, as aifr's DEFAULT_BATCH
BATCH_SECONDS = 0.5  # or until a batch has been read this long, as aifr's BATCH_SECONDS


def generate(path: Path, lines: int) -> int:
    """Write ``lines`` distinct Nuclei v3 ``-jsonl`` results; returns the file size."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(lines):
            template = f"tmpl-{i % 500}"
            host = f"h{i // 500}.example.test"
            record = {
                "template": f"http/misc/{template}.yaml",
                "template-url": f"https://cloud.projectdiscovery.io/public/{template}",
                "template-id": template,
                "info": {
                    "name": f"Check {template}",
                    "author": ["pdteam"],
                    "tags": ["misc", "exposure"],
                    "severity": SEVERITIES[i % len(SEVERITIES)],
                    "description": "A generated result for the import benchmark.",
                    "classification": {"cwe-id": ["cwe-200"], "cvss-score": 5.3},
                },
                "type": "http",
                "host": host,
                "port": "443",
                "scheme": "https",
                "url": f"https://{host}",
                "matched-at": f"https://{host}/path/{i % 7}",
                "ip": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                "timestamp": "2026-10-02T09:14:03.518223Z",
                "matcher-status": True,
            }
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
    return path.stat().st_size


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def floor_import(source: str, db_path: str) -> tuple[float, int, float]:
    """The floor, in a child: stdlib json + one executemany in one transaction."""
    start = time.perf_counter()
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE rows (id INTEGER PRIMARY KEY, template TEXT, host TEXT, "
        "severity TEXT, doc TEXT)"
    )
    count = 0

    def rows():  # type: ignore[no-untyped-def]  # a local generator, typed by use
        nonlocal count
        with open(source, encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                count += 1
                yield (
                    record["template-id"],
                    record.get("host"),
                    record["info"]["severity"],
                    line,
                )

    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO rows (template, host, severity, doc) VALUES (?, ?, ?, ?)", rows())
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - start, count, _peak_mb()


def floor_dedupe(source: str, db_path: str) -> tuple[float, int, float]:
    """The floor with the dedupe the issue requires, in a child.

    Stdlib json per line; a fingerprint that is one ``hashlib.sha256`` over the identity
    fields aifr's nuclei mapping uses (scanner, template id, ``matched-at`` else ``url``
    else ``host``, matcher name, extractor name, sorted extracted results; taken as
    written, without aifr's location normalization); ``executemany`` of an upsert on a
    unique fingerprint column, in transactions as aifr cuts them: ``BATCH`` lines, or
    fewer once a batch has been read for ``BATCH_SECONDS``.
    """
    start = time.perf_counter()
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE rows (id INTEGER PRIMARY KEY, template TEXT, host TEXT, "
        "severity TEXT, doc TEXT, fingerprint BLOB NOT NULL UNIQUE, last_seen TEXT, "
        "occurrences INTEGER NOT NULL DEFAULT 1)"
    )
    sql = (
        "INSERT INTO rows (template, host, severity, doc, fingerprint, last_seen) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(fingerprint) DO UPDATE SET "
        "last_seen = excluded.last_seen, occurrences = occurrences + 1"
    )
    count = 0
    batch: list[tuple[object, ...]] = []
    deadline = time.monotonic() + BATCH_SECONDS

    def flush() -> None:
        nonlocal deadline
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, batch)
        conn.execute("COMMIT")
        batch.clear()
        deadline = time.monotonic() + BATCH_SECONDS

    with open(source, encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            count += 1
            template = record["template-id"]
            location = record.get("matched-at") or record.get("url") or record.get("host") or ""
            identity = "\x1f".join(
                (
                    "1",
                    "nuclei",
                    template,
                    location,
                    record.get("matcher-name") or "",
                    record.get("extractor-name") or "",
                    *sorted(record.get("extracted-results") or ()),
                )
            )
            fingerprint = hashlib.sha256(identity.encode()).digest()  # 32 bytes: the least key
            batch.append(
                (
                    template,
                    record.get("host"),
                    record["info"]["severity"],
                    line,
                    fingerprint,
                    record.get("timestamp"),
                )
            )
            if len(batch) >= BATCH or (len(batch) % 256 == 0 and time.monotonic() >= deadline):
                flush()
    if batch:
        flush()
    conn.close()
    return time.perf_counter() - start, count, _peak_mb()


def aifr_import(source: str, db_path: str) -> tuple[float, int, float]:
    """aifr, in a child: ``import_findings`` into the SQLite findings store."""
    from aifr.findings.importer import import_findings
    from aifr.storage.sqlite import SqliteDatabase
    from aifr.storage.sqlite.findings import SqliteFindingStore, SqliteResourceRegistry

    start = time.perf_counter()
    store = SqliteFindingStore(SqliteDatabase(db_path))
    with open(source, "rb") as stream:
        summary = import_findings(
            store, SqliteResourceRegistry(store), stream, project_id="bench", scanner="auto"
        )
    return time.perf_counter() - start, summary.imported, _peak_mb()


def parse_only(source: str, db_path: str) -> tuple[float, int, float]:
    """The parsers alone, in a child: every record read and mapped, nothing stored.

    The cyclic collector is paused, as ``import_findings`` pauses it.
    """
    import gc

    from aifr.findings import ParsedFinding
    from aifr.findings.parsers import parse_findings

    del db_path
    gc.disable()
    start = time.perf_counter()
    with open(source, "rb") as stream:
        count = sum(isinstance(e, ParsedFinding) for e in parse_findings(stream))
    return time.perf_counter() - start, count, _peak_mb()


def _child(func, source: Path, work: Path, tag: str) -> tuple[float, int, float]:  # type: ignore[no-untyped-def]  # a module-level function
    db = work / f"{tag}-{time.monotonic_ns()}.db"
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        result: tuple[float, int, float] = pool.submit(func, str(source), str(db)).result()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return result


def measure(lines: int, rounds: int, work: Path) -> dict[str, float]:
    """Best time and peak RSS of each side over ``rounds`` alternating rounds."""
    source = work / f"nuclei-{lines}.jsonl"
    size = generate(source, lines)
    best: dict[str, tuple[float, int, float]] = {}
    for _ in range(rounds):
        for tag, func in (
            ("floor", floor_import),
            ("dedupe", floor_dedupe),
            ("parse", parse_only),
            ("aifr", aifr_import),
        ):
            elapsed, count, peak = _child(func, source, work, tag)
            if count != lines:
                raise SystemExit(f"{tag} stored {count} of {lines} records")
            earlier = best.get(tag)
            if earlier is None or elapsed < earlier[0]:
                best[tag] = (elapsed, count, max(peak, earlier[2] if earlier else 0.0))
    source.unlink()
    floor_s, aifr_s, parse_s = best["floor"][0], best["aifr"][0], best["parse"][0]
    dedupe_s = best["dedupe"][0]
    return {
        "lines": lines,
        "mb": size / 1e6,
        "floor_s": floor_s,
        "aifr_s": aifr_s,
        "floor_rps": lines / floor_s,
        "aifr_rps": lines / aifr_s,
        "ratio": aifr_s / floor_s,
        "dedupe_rps": lines / dedupe_s,
        "dedupe_s": dedupe_s,
        "dedupe_ratio": aifr_s / dedupe_s,
        "parse_ratio": parse_s / floor_s,
        "parse_rps": lines / parse_s,
        "floor_rss": best["floor"][2],
        "aifr_rss": best["aifr"][2],
    }


def run(sizes: list[int], rounds: int) -> str:
    """Measure every size and render the docs section."""
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="aifr-findings-bench-") as tmp:
        results = [measure(n, rounds, Path(tmp)) for n in sizes]
    load = (load_before, os.getloadavg()[0])
    rows = [
        f"| {r['lines']:,.0f} | {r['mb']:.0f} | {r['floor_rps']:,.0f} ({r['floor_s']:.1f} s) "
        f"| {r['dedupe_rps']:,.0f} ({r['dedupe_s']:.1f} s) "
        f"| {r['aifr_rps']:,.0f} ({r['aifr_s']:.1f} s) | {r['ratio']:.2f}x "
        f"| {r['dedupe_ratio']:.2f}x "
        f"| {r['parse_rps']:,.0f} ({r['parse_ratio']:.2f}x) "
        f"| {r['floor_rss']:.0f} | {r['aifr_rss']:.0f} |"
        for r in results
    ]
    return "\n".join(
        [
            SECTION,
            "",
            f"`benchmarks/findings_bench.py`, {platform.python_implementation()} "
            f"{platform.python_version()}, {os.cpu_count()} CPUs, best of {rounds} alternating "
            "rounds, each side in a fresh child process (peak RSS is the child's own "
            "`ru_maxrss`). Floor: the same lines read with stdlib `json` and inserted with "
            "one `executemany` in one transaction (the issue's floor). Floor + dedupe: the "
            "same, plus what the issue's dedupe by fingerprint requires of any "
            "implementation: one `hashlib.sha256` per line over the identity fields aifr "
            "fingerprints, and an upsert (`ON CONFLICT(fingerprint) DO UPDATE SET "
            "last_seen, occurrences + 1`) on a unique fingerprint column, in transactions "
            "as aifr cuts them (50,000 lines, or fewer once a batch has been read for 0.5 s). "
            "aifr: `aifr findings import` "
            "(`import_findings` into the SQLite findings store: detect, parse every field, "
            'severity, fingerprint, resource links, dedupe upsert, run links). "Parsers alone" '
            "reads and maps every record without storing it, to show where the time goes. "
            "Goals: at least 50,000 records/s, within 2x of the floor, peak RSS under 200 MB.",
            "",
            "| lines | file MB | floor records/s | floor + dedupe records/s "
            "| aifr records/s | aifr / floor | aifr / floor + dedupe "
            "| parsers alone records/s (/ floor) | floor peak RSS MB | aifr peak RSS MB |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            *_verdicts(results, load),
        ]
    )


def _verdicts(results: list[dict[str, float]], load: tuple[float, float]) -> list[str]:
    """One line per goal, met or not, from the largest file measured."""
    last = results[-1]
    rss = max(r["aifr_rss"] for r in results)

    def met(ok: bool) -> str:
        return "met" if ok else "not met"

    return [
        f"- Throughput {last['aifr_rps']:,.0f} records/s at {last['lines']:,.0f} lines: "
        f"{met(last['aifr_rps'] >= 50_000)} (goal 50,000).",
        f"- {last['ratio']:.2f}x the floor: {met(last['ratio'] <= 2.0)} (goal 2x). The "
        f"parsers alone take {last['parse_ratio']:.2f}x the floor (msgspec decodes each nuclei line "
        "into a Struct of the keys mapped, orjson any other line; mapping every field, severity, location and fingerprint is Python); the rest is "
        "building the rows (the stored document, encoded by msgspec, and the ids) and the "
        "dedupe upsert of 17 columns on a random-key index, which SQLite alone spends "
        "more than the floor's whole time on (its commits rewrite more of that index "
        "as the file grows).",
        f"- Restated goal, {last['dedupe_ratio']:.2f}x the floor + dedupe: "
        f"{met(last['dedupe_ratio'] <= 2.0)} (goal 2x). The issue's floor (the row above) "
        "stores lines and keeps no fingerprint index, yet the issue also asks for dedupe by "
        "fingerprint across runs, which no implementation can do without hashing each "
        "result and upserting on a unique key; the project rule restates a goal a "
        "benchmark shows to be below the floor against the floor it measured, so this "
        "row compares aifr with that floor, and the issue's own ratio stays above as "
        "written.",
        f"- Peak RSS at most {rss:.0f} MB across sizes: {met(rss < 200)} (goal 200 MB; flat "
        "with size: parsing streams into the store, at most 50,000 findings or 0.5 s per "
        "transaction, and no batch of records is held).",
        f"- Load average (1 min) {load[0]:.1f} when this run started and {load[1]:.1f} when "
        "it ended, on a host shared with other engineers' jobs: the floor varies between "
        "runs, so read the ratios of one row rather than absolute records/s across runs.",
    ]


def write_section(section: str, path: Path = DOCS) -> None:
    """Replace (or add) this benchmark's section of docs/benchmarks.md, leaving others."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def main() -> None:
    """Measure, print the section, and write it to the docs unless ``--no-docs``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", default="100000,1000000", help="comma-separated sizes")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds per size")
    parser.add_argument("--no-docs", action="store_true", help="print, do not write the docs")
    args = parser.parse_args()
    result = run([int(n) for n in args.lines.split(",")], args.rounds)
    if not args.no_docs:
        write_section(result)
    print(result)


if __name__ == "__main__":
    main()
