"""A findings import killed in the middle of a batch leaves the SQLite store sound, with whole batches.

The import runs in a child process that kills itself (``SIGKILL``, no cleanup) from an
SQLite progress handler some 20,000 instructions into the fourth batch's transaction,
when part of its rows are written: a real crash inside the write, not between batches.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from aifr.findings.importer import import_findings
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.findings import SqliteFindingStore, SqliteResourceRegistry

BATCH = 500
LINES = 3000
CHILD = """
import os, signal, sys
from aifr.findings.importer import import_findings
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.findings import SqliteFindingStore, SqliteResourceRegistry

db_path, source, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
database = SqliteDatabase(db_path)
store = SqliteFindingStore(database)
saved = []
steps = []

def crash_in_next_write():
    steps.append(1)
    if len(steps) == 2000:  # about 20,000 instructions in: rows of batch 4 are written
        os.kill(os.getpid(), signal.SIGKILL)
    return 0

def on_batch(summary):
    saved.append(summary.imported)
    if len(saved) == 3:  # the next statement run is inside batch 4's transaction
        database.connect().set_progress_handler(crash_in_next_write, 10)

with open(source, "rb") as stream:
    import_findings(store, SqliteResourceRegistry(store), stream, project_id="acme",
                    run_id="run-1", batch_size=batch, on_batch=on_batch)
"""


def _write_nuclei(path: Path, lines: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for i in range(lines):
            record = {
                "template-id": f"tmpl-{i % 50}",
                "info": {"name": "Check", "severity": "low"},
                "type": "http",
                "host": f"h{i}.example.test",
                "matched-at": f"https://h{i}.example.test/",
            }
            out.write(json.dumps(record) + "\n")


def test_an_import_killed_inside_a_batch_keeps_the_store_sound_with_only_whole_batches(
    tmp_path: Path,
) -> None:
    source = tmp_path / "nuclei.jsonl"
    _write_nuclei(source, LINES)
    db_path = tmp_path / "aifr.db"

    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(db_path), str(source), str(BATCH)],
        capture_output=True,
        timeout=120,
    )

    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        count = conn.execute("SELECT COUNT(*) FROM findings").fetchone()[0]
        finished = conn.execute("SELECT finished_at FROM findings_runs").fetchall()
    assert count == 3 * BATCH
    assert finished == [(None,)]  # the run shows the import did not finish

    store = SqliteFindingStore(SqliteDatabase(db_path))
    with source.open("rb") as stream:
        again = import_findings(
            store, SqliteResourceRegistry(store), stream, project_id="acme", run_id="run-1"
        )
    assert (again.imported, again.duplicates) == (LINES - 3 * BATCH, 3 * BATCH)
