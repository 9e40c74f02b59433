"""Kill -9 at seeded random points; the restarted engine finishes every run correctly.

Each scenario runs the 10-step compensable workflow of ``crash_child.py`` (half of
them fail at a seeded step, so compensation is killed too) and kills it five times:
between steps, inside steps (after the effect, before its commit), inside commits and
just after commits. After the last restart the run must be completed or fully
compensated, every effect and every undo must have happened exactly once (counted in
an effects log outside the database), and the audit chain must verify.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

from aifr.audit import AuditLedger
from aifr.storage.sqlite import SqliteDatabase
from aifr.storage.sqlite.audit import SqliteAuditStore
from aifr.storage.sqlite.runs import SqliteRunStore

CHILD = Path(__file__).with_name("crash_child.py")
KILLS_PER_SCENARIO = 5
KINDS = ("enter", "effect", "commit", "after")
STEPS = 10


def _child(
    workdir: Path, run_id: str, fail_step: int, plan: str | None
) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(CHILD), str(workdir), run_id, str(fail_step)]
    if plan is not None:
        args.append(plan)
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def _effects(workdir: Path) -> list[tuple[str, int]]:
    log = workdir / "effects.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [(line.split()[0], int(line.split()[1])) for line in lines]


def test_runs_killed_at_random_points_end_completed_or_compensated_with_each_effect_once(
    scenario: int, tmp_path: Path
) -> None:
    rng = random.Random(7919 * (scenario + 1))
    fail_step = rng.choice([0, rng.randint(2, STEPS)])
    run_id = f"run-crash-{scenario}"
    kills = 0
    for _ in range(KILLS_PER_SCENARIO):
        kind = rng.choice(KINDS)
        limit = 3 if kind in ("enter", "effect") else 12
        plan = f"{kind}:{rng.randint(1, limit)}"
        done = _child(tmp_path, run_id, fail_step, plan)
        if done.returncode == -9:
            kills += 1
        else:
            assert done.returncode == 0, done.stderr
    final = _child(tmp_path, run_id, fail_step, None)
    assert final.returncode == 0, final.stderr

    database = SqliteDatabase(tmp_path / "state.db")
    ledger = AuditLedger(SqliteAuditStore(database))
    run = SqliteRunStore(database, ledger).get(run_id)
    assert run is not None
    effects = _effects(tmp_path)
    done_steps = Counter(step for what, step in effects if what == "do")
    undone_steps = Counter(step for what, step in effects if what == "undo")
    if fail_step == 0:
        assert run.state.value == "completed"
        assert done_steps == Counter(range(1, STEPS + 1))
        assert not undone_steps
    else:
        assert run.state.value == "compensated"
        assert run.failed_step == f"s{fail_step}"
        before = range(1, fail_step)
        assert done_steps == Counter(before)
        assert undone_steps == Counter(before)
        assert [step for what, step in effects if what == "undo"] == sorted(before, reverse=True)
    assert ledger.verify().ok
    assert kills >= 1
    database.close()
