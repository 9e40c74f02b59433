"""aifr capabilities as OpenAI Agents SDK function tools, and function tools governed by aifr.

Extra ``openai-agents``. :func:`aifr_tools` gives ``FunctionTool``s whose calls go
through ``Runtime.ainvoke``; :func:`govern_tool` registers an existing function tool
as a capability and returns one that runs it only through the runtime.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue

from aifr.capabilities import (
    Capability,
    CapabilitySpec,
    OperationType,
    Risk,
    RiskLevel,
    SideEffects,
)
from aifr.errors import ConfigError
from aifr.integrations.results import governed_call, selected_specs
from aifr.invocation import Runtime

if TYPE_CHECKING:
    from agents import FunctionTool

__all__ = ["aifr_tools", "govern_tool"]


def _function_tool() -> type[FunctionTool]:
    try:
        from agents import FunctionTool
    except ImportError as exc:
        raise ConfigError(
            "aifr.integrations.openai_agents needs the OpenAI Agents SDK: "
            "pip install 'aifr[openai-agents]'"
        ) from exc
    return FunctionTool


def _arguments(text: str) -> dict[str, Any] | None:
    """The model's arguments as an object, or ``None`` when they are not a JSON object."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _invoker(
    runtime: Runtime, capability_id: str, principal: str, roles: frozenset[str]
) -> Callable[[Any, str], Awaitable[str]]:
    async def on_invoke_tool(_context: Any, arguments: str) -> str:
        parsed = _arguments(arguments)
        if parsed is None:
            reason = f"the tool arguments are not a JSON object: {arguments[:200]!r}"
            return json.dumps({"status": "failed", "code": "input.invalid", "reason": reason})
        answer = await governed_call(runtime, capability_id, parsed, principal, roles)
        return json.dumps(answer, default=str)

    return on_invoke_tool


def _as_tool(
    runtime: Runtime, spec: CapabilitySpec, principal: str, roles: frozenset[str]
) -> FunctionTool:
    return _function_tool()(
        name=spec.id.replace(".", "_"),
        description=spec.description or spec.name,
        params_json_schema=dict(spec.input_schema),
        on_invoke_tool=_invoker(runtime, spec.id, principal, roles),
        strict_json_schema=False,
    )


def aifr_tools(
    runtime: Runtime,
    principal: str,
    *,
    capabilities: Iterable[str] = ("*",),
    roles: Iterable[str] = (),
) -> list[FunctionTool]:
    """Function tools for the capabilities matching ``capabilities`` (globs).

    Raises:
        ConfigError: the OpenAI Agents SDK is not installed.
    """
    held = frozenset(roles)
    return [
        _as_tool(runtime, spec, principal, held) for spec in selected_specs(runtime, capabilities)
    ]


def govern_tool(
    tool: FunctionTool,
    runtime: Runtime,
    principal: str,
    *,
    capability_id: str | None = None,
    operation: OperationType = OperationType.WRITE,
    risk: RiskLevel | None = None,
    roles: Iterable[str] = (),
) -> FunctionTool:
    """Register ``tool`` as a capability and return a function tool that calls it through aifr.

    ``capability_id`` defaults to ``agents.<tool name>``; without ``risk`` the
    capability is undeclared, so HIGH.

    Raises:
        ConfigError: the OpenAI Agents SDK is not installed.
        CapabilityError: the id is taken or invalid.
    """
    from agents.tool_context import ToolContext

    spec = CapabilitySpec(
        id=capability_id or f"agents.{tool.name.replace('-', '_')}",
        name=tool.name,
        description=tool.description,
        input_schema=dict(tool.params_json_schema),
        operation_type=operation,
        side_effects=SideEffects(reversible=True, scope="external"),
        risk=Risk(level=risk, justification="declared by govern_tool") if risk else None,
        idempotent=operation is OperationType.READ,
        tags=("openai-agents",),
    )

    async def run_tool(**arguments: Any) -> JsonValue:
        text = json.dumps(arguments)
        context = ToolContext(
            context=None, tool_name=tool.name, tool_call_id="aifr", tool_arguments=text
        )
        value = await tool.on_invoke_tool(context, text)
        return value if isinstance(value, str | int | float | bool | dict | list) else str(value)

    runtime.registry.register(Capability(spec=spec, handler=run_tool))
    return _as_tool(runtime, spec, principal, frozenset(roles))
