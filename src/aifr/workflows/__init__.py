"""Durable, transactional workflows (DESIGN.md part E): specs, engine, saga, recovery."""

from aifr.workflows.builder import WorkflowBuilder, workflow
from aifr.workflows.engine import WorkflowEngine
from aifr.workflows.leases import Heartbeat, is_owner_gone, new_owner_id
from aifr.workflows.planning import plan_workflow, unregistered_capabilities
from aifr.workflows.ports import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    Notification,
    NotificationOutbox,
    OutboxItem,
    RunRecord,
    RunState,
    RunStore,
    StepKey,
    StepRecord,
    StepState,
)
from aifr.workflows.recovery import (
    Drift,
    DriftRule,
    Recovery,
    accept_drift,
    apply_drift_rule,
    drifted_steps,
)
from aifr.workflows.retention import PruneReport, Retention, prune_runs
from aifr.workflows.saga import Saga, UndoPlan
from aifr.workflows.spec import (
    CompensationOverride,
    InputSpec,
    RetryPolicy,
    StepSpec,
    WorkflowSpec,
    find_workflow,
    list_workflows,
    load_workflow_file,
    load_workflow_text,
    workflow_json_schema,
)
from aifr.workflows.state import RunContext
from aifr.workflows.templating import check_templates, has_templates, render_inputs
from aifr.workflows.views import PlannedStep, RunView
from aifr.workflows.worker import Worker

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "CompensationOverride",
    "Drift",
    "DriftRule",
    "Heartbeat",
    "InputSpec",
    "Notification",
    "NotificationOutbox",
    "OutboxItem",
    "PlannedStep",
    "PruneReport",
    "Recovery",
    "Retention",
    "RetryPolicy",
    "RunContext",
    "RunRecord",
    "RunState",
    "RunStore",
    "RunView",
    "Saga",
    "StepKey",
    "StepRecord",
    "StepSpec",
    "StepState",
    "UndoPlan",
    "WorkflowBuilder",
    "WorkflowEngine",
    "WorkflowSpec",
    "Worker",
    "accept_drift",
    "apply_drift_rule",
    "check_templates",
    "drifted_steps",
    "find_workflow",
    "has_templates",
    "is_owner_gone",
    "list_workflows",
    "load_workflow_file",
    "load_workflow_text",
    "new_owner_id",
    "plan_workflow",
    "prune_runs",
    "render_inputs",
    "workflow",
    "workflow_json_schema",
    "unregistered_capabilities",
]
