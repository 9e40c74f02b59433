"""Workflows as MCP tools: one tool per workflow, progress reported step by step.

A workflow ``deploy`` is the tool ``workflow.deploy``. Its input schema comes from the
workflow's typed inputs; its annotations are the most cautious of its steps' (read-only
only if every step is, destructive if any step is, open-world if any step is).

A call starts a durable run through the :class:`~aifr.workflows.WorkflowEngine` as the
caller and drives it in a worker thread; each step's invocation-finished event (emitted
by the runtime in that thread) becomes a progress notification, sent before the next
step starts (when the client asked for progress). The run is durable either way: if the client goes away the run is still in
the state database and ``aifr worker`` or ``aifr runs resume`` finishes it.

The result is the run: ``completed`` is a success with each step's output; a run that
waits for an approval is a pending tool error naming the approval; a failed or
compensated run is a tool error naming the failed step and what was compensated.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import mcp_types as types
from mcp.server.context import ServerRequestContext
from pydantic import JsonValue

from aifr.capabilities import CapabilityRegistry
from aifr.errors import AifrError, ErrorCode, WorkflowError
from aifr.invocation import LifecycleEvent
from aifr.transports.mcp.auth import McpIdentity
from aifr.transports.mcp.results import error_result
from aifr.transports.mcp.tools import annotations_for
from aifr.workflows import (
    TERMINAL_STATES,
    RunState,
    RunView,
    StepState,
    WorkflowEngine,
    WorkflowSpec,
)

__all__ = ["WORKFLOW_TOOL_PREFIX", "WorkflowTools"]

logger = logging.getLogger(__name__)

WORKFLOW_TOOL_PREFIX = "workflow."
_current_run: contextvars.ContextVar[_RunProgress | None] = contextvars.ContextVar(
    "aifr_mcp_workflow_progress", default=None
)


def _input_schema(spec: WorkflowSpec) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name, declared in spec.inputs.items():
        prop: dict[str, Any] = {"type": declared.type}
        if declared.description:
            prop["description"] = declared.description
        if declared.default is not None:
            prop["default"] = declared.default
        properties[name] = prop
    required = sorted(name for name, declared in spec.inputs.items() if declared.is_required)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


def _step_view(view: RunView) -> dict[str, JsonValue]:
    return view.to_dict()


class WorkflowTools:
    """The workflow tools of one server, and the run-status resource behind them."""

    def __init__(
        self,
        engine: WorkflowEngine,
        specs: Iterable[WorkflowSpec],
        registry: CapabilityRegistry,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.specs: dict[str, WorkflowSpec] = {
            WORKFLOW_TOOL_PREFIX + spec.name: spec for spec in specs
        }
        engine.runtime.events.subscribe(self._observe, kinds=["invocation.finished"])

    def owns(self, tool: str) -> bool:
        """Whether ``tool`` names one of these workflows."""
        return tool in self.specs

    def _annotations(self, spec: WorkflowSpec) -> types.ToolAnnotations:
        hints = [
            annotations_for(found)
            for step in spec.steps
            if (found := self.registry.get(step.capability)) is not None
        ]
        known = len(hints) == len(spec.steps)
        return types.ToolAnnotations(
            title=spec.name,
            read_only_hint=known and all(h.read_only_hint for h in hints),
            destructive_hint=not known or any(h.destructive_hint for h in hints),
            idempotent_hint=False,
            open_world_hint=not known or any(h.open_world_hint for h in hints),
        )

    def tools(self) -> list[types.Tool]:
        """One tool per workflow."""
        listed = []
        for name, spec in self.specs.items():
            steps = ", ".join(f"{s.id} ({s.capability})" for s in spec.steps)
            description = spec.description or f"Run the {spec.name} workflow."
            listed.append(
                types.Tool(
                    name=name,
                    title=spec.name,
                    description=f"{description}\n\n[aifr workflow v{spec.version}: {steps}]",
                    input_schema=_input_schema(spec),
                    annotations=self._annotations(spec),
                    _meta={"aifr/workflow": spec.name, "aifr/version": spec.version},
                )
            )
        return listed

    async def run_status(self, run_id: str, principal: str) -> JsonValue:
        """A run's state and steps, if ``principal`` started it.

        Raises:
            WorkflowError: ``workflow.run_not_found`` (also for another caller's run).
        """
        view = await anyio.to_thread.run_sync(self.engine.view, run_id)
        if view.run.principal != principal:
            raise WorkflowError(
                f"no workflow run {run_id!r} among the runs of {principal}",
                code=ErrorCode.WORKFLOW_RUN_NOT_FOUND,
                run_id=run_id,
            )
        return _step_view(view)

    async def call(
        self,
        ctx: ServerRequestContext[Any, Any],
        tool: str,
        arguments: Mapping[str, Any],
        who: McpIdentity,
    ) -> types.CallToolResult:
        """Start and drive a run, reporting progress; the finished or paused run as a result.

        Raises:
            AifrError: the inputs are invalid or the run cannot be stored.
        """
        spec = self.specs[tool]
        started = await anyio.to_thread.run_sync(
            lambda: self.engine.start(
                spec, arguments, who.principal, roles=tuple(sorted(who.roles)), execute=False
            )
        )
        run_id = started.run.id
        progress = _RunProgress(ctx, steps=len(spec.steps))
        await progress.report(f"run {run_id} started")
        token = _current_run.set(progress)
        try:
            # The copied context carries ``progress`` into the thread that drives the run,
            # where the runtime emits each step's invocation events.
            view = await anyio.to_thread.run_sync(lambda: self.engine.resume(run_id))
        finally:
            _current_run.reset(token)
        await progress.advance(f"run {run_id} {view.state.value}")
        return _run_result(tool, view)

    def _observe(self, event: LifecycleEvent) -> None:
        progress = _current_run.get()
        if progress is not None:
            progress.step_finished(event)


class _RunProgress:
    """Progress notifications of one workflow call: the start, each step invocation, the end.

    MCP requires each notification's progress to be greater than the last, so the
    run's end is a unit of its own: a run of N steps goes 0/N+1 at the start, one more
    per finished step invocation, and one more when the run stops (N+1/N+1 when it
    completed). Compensation invocations count too; past the total, none is given.
    """

    def __init__(self, ctx: ServerRequestContext[Any, Any], steps: int) -> None:
        self._ctx = ctx
        self._total = steps + 1
        self.finished = 0

    async def report(self, message: str) -> None:
        """Send the progress so far (no progress token: the session sends nothing)."""
        total = self._total if self.finished <= self._total else None
        await self._ctx.session.report_progress(self.finished, total, message)

    async def advance(self, message: str) -> None:
        """One more unit done, reported."""
        self.finished += 1
        await self.report(message)

    def step_finished(self, event: LifecycleEvent) -> None:
        """Called in the thread driving the run, after each step's invocation."""
        status = event.details.get("status")
        try:
            anyio.from_thread.run(self.advance, f"{event.capability_id} {status}")
        except Exception:  # a gone client must not break the run; the run is durable
            logger.debug("progress notification not delivered", exc_info=True)


def _run_result(tool: str, view: RunView) -> types.CallToolResult:
    body = _step_view(view)
    state = view.state
    if state is RunState.COMPLETED:
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=_summary(view))],
            structured_content=body,
            _meta={"aifr/run_id": view.run.id},
        )
    if state is RunState.WAITING_APPROVAL:
        waiting = next((s for s in view.steps if s.state is StepState.WAITING_APPROVAL), None)
        approval_id = waiting.approval_id if waiting is not None else None
        error: AifrError = WorkflowError(
            f"run {view.run.id} of {tool} waits for a human approval of step "
            f"{waiting.step_id if waiting else '?'} (approval id {approval_id}): a person the "
            f"policy allows runs 'aifr approvals approve {approval_id} --as THEIR_NAME', then "
            f"'aifr runs resume {view.run.id}' (or 'aifr worker') finishes the run",
            code=ErrorCode.APPROVAL_REQUIRED,
            run_id=view.run.id,
            approval_id=approval_id,
        )
        return error_result(error, status="pending_approval", approval_id=approval_id, run=body)
    code = (
        ErrorCode.WORKFLOW_COMPENSATION_FAILED
        if state is RunState.COMPENSATION_FAILED
        else ErrorCode.WORKFLOW_STEP_FAILED
    )
    error = WorkflowError(
        f"run {view.run.id} of {tool} ended {state.value}"
        + (f" at step {view.run.failed_step}" if view.run.failed_step else "")
        + (f": {view.run.error.get('message')}" if view.run.error else ""),
        code=code,
        run_id=view.run.id,
    )
    return error_result(error, status=state.value, resumable=state not in TERMINAL_STATES, run=body)


def _summary(view: RunView) -> str:
    steps = "; ".join(f"{s.step_id}: {s.state.value}" for s in view.steps)
    return f"run {view.run.id} {view.state.value} ({steps})"
