"""The engine's completed step is ``record.evolve(...)`` built field by field: the two agree."""

from __future__ import annotations

import dataclasses
from typing import Any

from aifr.workflows.engine import completed_step
from aifr.workflows.ports import StepRecord, StepState


def _every_field_set() -> StepRecord:
    """A step whose every field holds a value of its own (so a dropped field shows)."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(StepRecord):
        if field.name == "state":
            values[field.name] = StepState.WAITING_APPROVAL
        elif field.name in ("index", "attempt", "undo_attempt"):
            values[field.name] = len(values) + 2
        elif field.name in ("next_attempt_at", "finished_at"):
            values[field.name] = float(len(values))
        elif field.name in ("inputs", "error", "undo_error"):
            values[field.name] = {field.name: len(values)}
        elif field.name in ("output", "undo_output"):
            values[field.name] = [field.name]
        else:
            values[field.name] = f"{field.name}-value"
    return StepRecord(**values)


def test_a_completed_step_is_the_record_evolved_with_every_other_field_kept() -> None:
    record = _every_field_set()
    changes: dict[str, Any] = {
        "output": {"n": 1},
        "inputs": {"n": 1},
        "fingerprint": "f" * 64,
        "audit_id": "au-1-00",
        "finished_at": 12.5,
    }

    done = completed_step(record, **changes)

    assert done == record.evolve(
        state=StepState.COMPLETED, error=None, next_attempt_at=None, **changes
    )
