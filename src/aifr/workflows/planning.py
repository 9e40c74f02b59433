"""Dry runs: what each step of a workflow would do for a principal, before anything runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import JsonValue

from aifr.capabilities import CapabilityRegistry
from aifr.errors import WorkflowError
from aifr.invocation import Runtime
from aifr.policy import Decision, PolicyRequest
from aifr.workflows.spec import StepSpec, WorkflowSpec
from aifr.workflows.templating import render_inputs
from aifr.workflows.views import PlannedStep

__all__ = ["plan_workflow", "unregistered_capabilities"]


def unregistered_capabilities(registry: CapabilityRegistry, spec: WorkflowSpec) -> list[str]:
    """One problem per step (or compensation override) naming a capability not registered.

    A run of such a workflow could only fail at that step after the earlier ones had
    acted (and then be undone), so a run is refused before it starts instead.
    """
    problems = []
    for index, step in enumerate(spec.steps):
        if registry.get(step.capability) is None:
            problems.append(f"steps[{index}].capability: {step.capability} is not registered")
        override = step.compensation.capability if step.compensation is not None else None
        if override is not None and registry.get(override) is None:
            problems.append(f"steps[{index}].compensation.capability: {override} is not registered")
    return problems


def plan_workflow(
    runtime: Runtime,
    spec: WorkflowSpec,
    inputs: Mapping[str, Any],
    principal: str,
    *,
    roles: tuple[str, ...] = (),
) -> list[PlannedStep]:
    """Each step's capability, risk and policy decision for ``principal``; runs nothing.

    The decision is taken with ``PolicyEngine.peek`` (no rate-limit token). Inputs that
    depend on earlier steps' outputs cannot be known yet; the decision is then taken on
    the inputs that can be rendered.

    Raises:
        InputValidationError: the inputs do not match the workflow's declaration.
    """
    bound = spec.bind_inputs(inputs)
    context = {
        "inputs": bound,
        "steps": {},
        "run": {"id": "(plan)", "workflow": spec.name, "principal": principal},
    }
    planned = []
    for step in spec.steps:
        found = runtime.registry.get(step.capability)
        if found is None:
            planned.append(
                PlannedStep(
                    step.id,
                    step.capability,
                    None,
                    None,
                    None,
                    None,
                    None,
                    "capability is not registered",
                    None,
                )
            )
            continue
        decision = runtime.policy.peek(
            PolicyRequest(
                principal=principal,
                capability=found,
                inputs=_renderable(step, context),
                roles=frozenset(roles),
                workflow_id=spec.name,
            )
        )
        if found.requires_approval and decision.decision is Decision.ALLOW:
            decision_name = Decision.REQUIRE_APPROVAL.value
        else:
            decision_name = decision.decision.value
        planned.append(
            PlannedStep(
                step_id=step.id,
                capability=step.capability,
                version=found.version,
                operation=found.operation_type.value,
                risk=found.effective_risk.value,
                decision=decision_name,
                rule_id=decision.rule_id,
                reason=decision.reason,
                compensation=_compensation_label(step, found.compensation.capability_id),
            )
        )
    return planned


def _renderable(step: StepSpec, context: Mapping[str, Any]) -> dict[str, JsonValue]:
    rendered: dict[str, JsonValue] = {}
    for key, value in step.inputs.items():
        try:
            rendered.update(render_inputs({key: value}, context, where="plan"))
        except WorkflowError:
            rendered[key] = value
    return rendered


def _compensation_label(step: StepSpec, default: str | None) -> str | None:
    override = step.compensation
    if override is None:
        return default
    return None if override.none else override.capability
