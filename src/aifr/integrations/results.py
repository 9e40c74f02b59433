"""A governed call's result as what a framework hands back to its model.

An agent loop ends on an exception from a tool; a denial or a pending approval is an
answer the model should read and act on (ask a human, try something else). So a call
that did not run becomes a small JSON object naming what happened and why.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import JsonValue

from aifr.capabilities import CapabilitySpec
from aifr.invocation import CallOptions, Result, Runtime, Status

__all__ = ["governed_call", "model_facing", "selected_specs"]


def model_facing(result: Result) -> JsonValue:
    """The output of a call that ran, else ``{"status", "code", "reason", ...}`` to read."""
    if result.status is Status.OK:
        return result.output
    facts: dict[str, JsonValue] = {"status": result.status.value}
    if result.error is not None:
        facts["code"] = result.error.code.value
        facts["reason"] = result.error.message
    elif result.decision is not None:
        facts["reason"] = result.decision.reason
    if result.status is Status.PENDING_APPROVAL:
        facts["approval_id"] = result.approval_id
        facts["next"] = (
            "a human must approve this call (aifr approvals approve "
            f"{result.approval_id}); call the tool again with the same arguments afterwards"
        )
    if result.decision is not None and result.decision.rule_id:
        facts["rule"] = result.decision.rule_id
    return facts


async def governed_call(
    runtime: Runtime,
    capability_id: str,
    arguments: Mapping[str, Any],
    principal: str,
    roles: frozenset[str] = frozenset(),
) -> JsonValue:
    """Invoke through the runtime and return what the model should see."""
    result = await runtime.ainvoke(capability_id, arguments, principal, CallOptions(roles=roles))
    return model_facing(result)


def selected_specs(runtime: Runtime, patterns: Iterable[str]) -> list[CapabilitySpec]:
    """The registered capabilities whose id matches one of ``patterns`` (globs)."""
    globs = list(patterns)
    return [
        spec
        for spec in runtime.registry.list()
        if any(fnmatch.fnmatchcase(spec.id, glob) for glob in globs)
    ]
