"""Kill -9 at seeded random points; the restarted engine finishes every run correctly.

Each scenario drives the 10-step compensable workflow of ``crash_child.py`` and SIGKILLs
it exactly ``KILLS_PER_SCENARIO`` times: between steps, inside steps (after the effect,
before its commit), between the writes of a transaction, inside commits and just after
commits. A kill point is only counted when the process really died there; when a run
finishes before the next kill lands, the scenario starts another run (each run fails
at a seeded step half of the time, so compensation is killed too). After the last
restart every run must be completed or fully compensated, every effect and every undo
must have happened exactly once (counted in an effects log outside the database), and
the audit chain must verify.
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
KINDS = ("enter", "effect", "write", "commit", "after")
STEPS = 10
TERMINAL = ("completed", "compensated")


def _child(
    workdir: Path, run_id: str, fail_step: int, plan: str | None
) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(CHILD), str(workdir), run_id, str(fail_step)]
    if plan is not None:
        args.append(plan)
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def _effects(workdir: Path) -> dict[str, list[tuple[str, int]]]:
    """Effects per run id: ``(do|undo, step)`` in the order they happened."""
    log = workdir / "effects.log"
    per_run: dict[str, list[tuple[str, int]]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        what, step, key = line.split()
        run_id = key.split(":")[1]  # wf:<run>:<step>:<attempt>[:undo...]
        per_run.setdefault(run_id, []).append((what, int(step)))
    return per_run


def _kill_plan(rng: random.Random) -> str:
    kind = rng.choice(KINDS)
    limit = 3 if kind in ("enter", "effect") else 12
    return f"{kind}:{rng.randint(1, limit)}"


def _check_run(state: str, failed_step: str | None, fail_step: int, effects: list) -> None:
    done = Counter(step for what, step in effects if what == "do")
    undone = Counter(step for what, step in effects if what == "undo")
    if fail_step == 0:
        assert state == "completed"
        assert done == Counter(range(1, STEPS + 1))
        assert not undone
    else:
        assert state == "compensated"
        assert failed_step == f"s{fail_step}"
        before = range(1, fail_step)
        assert done == Counter(before)
        assert undone == Counter(before)
        assert [step for what, step in effects if what == "undo"] == sorted(before, reverse=True)


def test_runs_killed_at_random_points_end_completed_or_compensated_with_each_effect_once(
    scenario: int, tmp_path: Path
) -> None:
    rng = random.Random(7919 * (scenario + 1))
    runs: dict[str, int] = {}
    run_id = ""
    kills = attempts = 0
    while kills < KILLS_PER_SCENARIO:
        attempts += 1
        assert attempts <= 4 * KILLS_PER_SCENARIO, "kill points keep missing the run"
        if not run_id:
            run_id = f"run-crash-{scenario}-{len(runs)}"
            runs[run_id] = rng.choice([0, rng.randint(2, STEPS)])
        done = _child(tmp_path, run_id, runs[run_id], _kill_plan(rng))
        if done.returncode == -9:
            kills += 1
            continue
        assert done.returncode == 0, done.stderr
        if done.stdout.strip() in TERMINAL:  # it finished before the kill point: a new run
            run_id = ""
    if run_id:
        final = _child(tmp_path, run_id, runs[run_id], None)
        assert final.returncode == 0, final.stderr

    database = SqliteDatabase(tmp_path / "state.db")
    ledger = AuditLedger(SqliteAuditStore(database))
    store = SqliteRunStore(database, ledger)
    effects = _effects(tmp_path)
    for rid, fail_step in runs.items():
        run = store.get(rid)
        assert run is not None
        _check_run(run.state.value, run.failed_step, fail_step, effects.get(rid, []))
    assert kills == KILLS_PER_SCENARIO
    assert ledger.verify().ok
    database.close()
