"""Rows of workflow runs and steps: the column lists and codecs both backends share.

SQLite and PostgreSQL store runs and steps in the same columns (JSON values as text),
so the record <-> row mapping lives here once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import JsonValue

from aifr.capabilities import compact_encoder
from aifr.errors import ErrorCode, WorkflowError
from aifr.workflows.ports import TERMINAL_STATES, RunRecord, RunState, StepRecord, StepState

__all__ = [
    "CLAIMABLE_INDEX",
    "ENCODE",
    "RUN_COLUMNS",
    "STEP_COLUMNS",
    "encode_column",
    "prunable_where",
    "replay_fields",
    "run_from_row",
    "run_params",
    "states_in",
    "step_from_row",
    "step_from_values",
    "step_params",
]

RUN_COLUMNS = (
    "id, workflow, workflow_version, definition, inputs, principal, roles, state, "
    "fingerprints, error, failed_step, cancel_requested, created_at, updated_at, "
    "lease_owner, lease_expires_at"
)
STEP_COLUMNS = (
    "run_id, step_id, idx, capability, state, attempt, fingerprint, inputs, output, error, "
    "approval_id, audit_id, next_attempt_at, finished_at, undo_attempt, undo_capability, "
    "undo_output, undo_error, undo_approval_id"
)
_STEP_NAMES = STEP_COLUMNS.split(", ")
ENCODE = compact_encoder(sort_keys=True, ensure_ascii=True, allow_nan=True)

CLAIMABLE_INDEX = (
    "CREATE INDEX wf_runs_claimable ON wf_runs (created_at, id) "
    "WHERE state IN ('compensating', 'pending', 'running')"
)
"""The work queue in claiming order: the runs a worker drives without anyone's input.

A claim walks it from its oldest entry and stops at the first run it can lease. Without
it every claim read every run in the table, finished ones included, and sorted the
active ones: a cost that grew with the queue and with the table's history. Its ``WHERE``
is :data:`~aifr.workflows.ports.ACTIVE_STATES` as :func:`states_in` writes them (a query
uses a partial index only when its own condition is the index's, or implies it). The
text is a migration's, so it never changes; a test checks that the claim still uses it.
"""


def encode_column(value: Any) -> str | None:
    """A JSON column's text (sorted, compact), or SQL ``NULL`` for ``None``.

    One encoder, built once: ``json.dumps`` with options builds a new one per call, and
    a workflow step encodes several values.
    """
    return None if value is None else ENCODE(value)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


_DEFINITIONS_KEPT = 64
"""Most distinct definition texts :func:`run_from_row` keeps decoded."""
_definitions: dict[str, Any] = {}


def _definition(text: str) -> Any:
    """A run's stored definition, decoded once per distinct text.

    The runs of one workflow version store the same text (3 kB for 10 steps), and a
    worker reads one with every run it claims: decoding it cost about 30 µs a run. The
    decoded value is shared by those runs, which only read their definition, as runs
    started from one spec share its ``definition`` (and :meth:`WorkflowSpec.from_snapshot`
    then finds its validated spec by identity).
    """
    decoded = _definitions.get(text)
    if decoded is None:
        decoded = json.loads(text)
        if len(_definitions) >= _DEFINITIONS_KEPT:
            _definitions.clear()
        _definitions[text] = decoded
    return decoded


def run_from_row(row: Mapping[str, Any]) -> RunRecord:
    """A run from a row read by column name."""
    return RunRecord(
        id=row["id"],
        workflow=row["workflow"],
        workflow_version=row["workflow_version"],
        definition=_definition(row["definition"]),
        inputs=json.loads(row["inputs"]),
        principal=row["principal"],
        roles=tuple(json.loads(row["roles"])),
        state=RunState(row["state"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        fingerprints=json.loads(row["fingerprints"]),
        error=_loads(row["error"]),
        failed_step=row["failed_step"],
        cancel_requested=bool(row["cancel_requested"]),
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
    )


def step_from_row(row: Mapping[str, Any]) -> StepRecord:
    """A step from a row read by column name."""
    return step_from_values([row[name] for name in _STEP_NAMES])


def step_from_values(values: Sequence[Any]) -> StepRecord:
    """A step from a row's values in :data:`STEP_COLUMNS` order (a tuple row).

    What :func:`step_from_row` reads by name: a worker builds every step of each run it
    claims from its tuple row, and naming the columns first cost half of it (about 2.5
    µs a step).
    """
    (
        run_id, step_id, index, capability, state, attempt, fingerprint, inputs, output,
        error, approval_id, audit_id, next_attempt_at, finished_at, undo_attempt,
        undo_capability, undo_output, undo_error, undo_approval_id,
    ) = values  # fmt: skip
    return StepRecord(
        run_id=run_id,
        step_id=step_id,
        index=index,
        capability=capability,
        state=StepState(state),
        attempt=attempt,
        fingerprint=fingerprint,
        inputs=_loads(inputs),
        output=_loads(output),
        error=_loads(error),
        approval_id=approval_id,
        audit_id=audit_id,
        next_attempt_at=next_attempt_at,
        finished_at=finished_at,
        undo_attempt=undo_attempt,
        undo_capability=undo_capability,
        undo_output=_loads(undo_output),
        undo_error=_loads(undo_error),
        undo_approval_id=undo_approval_id,
    )


def step_params(s: StepRecord) -> tuple[Any, ...]:
    """A step's values in :data:`STEP_COLUMNS` order."""
    return (
        s.run_id, s.step_id, s.index, s.capability, s.state.value, s.attempt, s.fingerprint,
        encode_column(s.inputs), encode_column(s.output), encode_column(s.error),
        s.approval_id, s.audit_id, s.next_attempt_at, s.finished_at, s.undo_attempt,
        s.undo_capability, encode_column(s.undo_output), encode_column(s.undo_error),
        s.undo_approval_id,
    )  # fmt: skip


def run_params(r: RunRecord, definition: str) -> tuple[Any, ...]:
    """A run's values in :data:`RUN_COLUMNS` order (``definition`` already encoded)."""
    return (
        r.id, r.workflow, r.workflow_version, definition, encode_column(r.inputs), r.principal,
        encode_column(list(r.roles)), r.state.value, encode_column(r.fingerprints),
        encode_column(r.error), r.failed_step, int(r.cancel_requested), r.created_at,
        r.updated_at, r.lease_owner, r.lease_expires_at,
    )  # fmt: skip


_DROPPED = frozenset({"output", "ok", "replayed"})
"""Keys a stored result leaves out: the output (its own column) and what replay derives."""


def replay_fields(result: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """The part of ``Result.to_dict()`` a step row keeps to replay the result.

    What ``Result.from_dict`` reads back the same without it is left out: the output
    (kept in its own column), ``ok`` and ``replayed`` (derived), ``None`` values and
    empty lists (its defaults), and the same inside the policy decision. A test pins that
    replaying the kept part gives the very result replaying the whole would.
    """
    kept: dict[str, JsonValue] = {}
    for name, value in result.items():
        if value is None or value == [] or name in _DROPPED:
            continue
        if name == "decision" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None and v != [] and v != {}}
        kept[name] = value
    return kept


def states_in(states: Iterable[RunState]) -> str:
    """``state IN (...)`` naming ``states`` as literals, sorted: :data:`CLAIMABLE_INDEX`'s form.

    Literals, not parameters: the planners prove that a query may use the partial index
    from its text (SQLite needs the very term; PostgreSQL cannot look inside a parameter
    of a prepared statement). The values are the enum's own, never a caller's text.
    """
    return "state IN (" + ", ".join(f"'{state.value}'" for state in sorted(states)) + ")"


def prunable_where(states: Iterable[RunState], mark: str) -> str:
    """The ``WHERE`` of runs to prune: in ``states``, unchanged since the ``mark`` parameter.

    ``mark`` is the backend's placeholder, used twice (pass the time twice): a run's
    ``created_at`` is never after its ``updated_at``, so the first term lets the query
    walk ``wf_runs_state`` (state, created_at) instead of the whole table.

    Raises:
        WorkflowError: ``workflow.bad_state`` naming a state a run can still leave (or
            none at all): only finished runs are ever deleted.
    """
    chosen = frozenset(states)
    alive = sorted(state.value for state in chosen - TERMINAL_STATES)
    if alive or not chosen:
        finished = ", ".join(sorted(state.value for state in TERMINAL_STATES))
        raise WorkflowError(
            f"runs in state {', '.join(alive)} are not finished and cannot be pruned "
            f"(prunable states: {finished})"
            if alive
            else f"name at least one state to prune (prunable states: {finished})",
            code=ErrorCode.WORKFLOW_BAD_STATE,
            states=alive,
        )
    return f"{states_in(chosen)} AND created_at < {mark} AND updated_at < {mark}"
