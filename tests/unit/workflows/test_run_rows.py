"""Run and step rows: tuple rows decode as named rows do, and a definition once per text."""

from __future__ import annotations

import json

from aifr.storage.run_rows import (
    STEP_COLUMNS,
    run_from_row,
    step_from_row,
    step_from_values,
)
from aifr.workflows.ports import StepState


def test_a_tuple_row_gives_the_step_its_named_row_gives() -> None:
    values = (
        "run-1", "s1", 3, "files.write@1", "completed", 2, "f" * 64, '{"path":"a"}',
        '{"bytes":3}', None, "ap-1", "au-7-x", 12.5, 13.0, 1, "files.restore",
        '{"ok":true}', '{"code":"x"}', None,
    )  # fmt: skip
    named = dict(zip(STEP_COLUMNS.split(", "), values, strict=True))

    step = step_from_values(values)

    assert step == step_from_row(named)
    assert step.state is StepState.COMPLETED
    assert step.index == 3
    assert step.inputs == {"path": "a"}
    assert step.undo_error == {"code": "x"}


def _run_row(definition: str) -> dict[str, object]:
    return {
        "id": "run-1", "workflow": "w", "workflow_version": "1", "definition": definition,
        "inputs": "{}", "principal": "p", "roles": "[]", "state": "pending",
        "fingerprints": "{}", "error": None, "failed_step": None, "cancel_requested": 0,
        "created_at": 1.0, "updated_at": 1.0, "lease_owner": None, "lease_expires_at": None,
    }  # fmt: skip


def test_runs_stored_with_one_definition_share_its_decoding_and_others_do_not() -> None:
    text = json.dumps({"name": "w", "version": "1", "steps": [{"id": "a"}]})
    first = run_from_row(_run_row(text))
    again = run_from_row(_run_row("".join(text)))  # an equal text, another object

    assert again.definition is first.definition
    other = run_from_row(_run_row(text.replace('"a"', '"b"')))
    assert other.definition == {"name": "w", "version": "1", "steps": [{"id": "b"}]}
    assert first.definition == {"name": "w", "version": "1", "steps": [{"id": "a"}]}
