"""aifr capabilities as LangChain tools, and LangChain tools governed by aifr (extra ``langchain``).

:func:`aifr_tools` turns capabilities into ``StructuredTool``s whose calls go through
``Runtime.ainvoke``. :func:`govern_tool` goes the other way: an existing LangChain tool
is registered as a capability (its risk declared by the caller, HIGH when not) and the
tool handed back calls it only through the runtime, so policy, approval and audit apply.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, cast

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
    from langchain_core.tools import BaseTool, StructuredTool

__all__ = ["aifr_tools", "govern_tool"]


def _structured_tool() -> type[StructuredTool]:
    try:
        from langchain_core.tools import StructuredTool
    except ImportError as exc:
        raise ConfigError(
            "aifr.integrations.langchain needs LangChain: pip install 'aifr[langchain]'"
        ) from exc
    return StructuredTool


def _tool_name(capability_id: str) -> str:
    return capability_id.replace(".", "_")


def _caller(
    runtime: Runtime, capability_id: str, principal: str, roles: frozenset[str]
) -> Callable[..., Coroutine[Any, Any, str]]:
    async def call(**arguments: Any) -> str:
        answer = await governed_call(runtime, capability_id, arguments, principal, roles)
        return json.dumps(answer, default=str)

    return call


def _as_tool(
    runtime: Runtime, spec: CapabilitySpec, principal: str, roles: frozenset[str]
) -> StructuredTool:
    return _structured_tool().from_function(
        coroutine=_caller(runtime, spec.id, principal, roles),
        name=_tool_name(spec.id),
        description=spec.description or spec.name,
        args_schema=dict(spec.input_schema),
        infer_schema=False,
    )


def aifr_tools(
    runtime: Runtime,
    principal: str,
    *,
    capabilities: Iterable[str] = ("*",),
    roles: Iterable[str] = (),
) -> list[StructuredTool]:
    """LangChain tools for the capabilities matching ``capabilities`` (globs).

    Results are JSON text: the output, or what stopped the call (see
    :mod:`aifr.integrations.results`).

    Raises:
        ConfigError: langchain-core is not installed.
    """
    held = frozenset(roles)
    return [
        _as_tool(runtime, spec, principal, held) for spec in selected_specs(runtime, capabilities)
    ]


def govern_tool(
    tool: BaseTool,
    runtime: Runtime,
    principal: str,
    *,
    capability_id: str | None = None,
    operation: OperationType = OperationType.WRITE,
    risk: RiskLevel | None = None,
    roles: Iterable[str] = (),
) -> StructuredTool:
    """Register ``tool`` as a capability and return a tool that calls it through aifr.

    ``capability_id`` defaults to ``langchain.<tool name>``; without ``risk`` the
    capability is undeclared, so HIGH.

    Raises:
        ConfigError: langchain-core is not installed.
        CapabilityError: the id is taken or invalid.
    """
    model = tool.get_input_schema()  # pydantic v2 (or a v1 model, from older tools)
    to_schema = getattr(model, "model_json_schema", None) or model.schema
    schema = cast(dict[str, JsonValue], to_schema())
    spec = CapabilitySpec(
        id=capability_id or f"langchain.{tool.name.replace('-', '_')}",
        name=tool.name,
        description=tool.description,
        input_schema=schema,
        operation_type=operation,
        side_effects=SideEffects(reversible=True, scope="external"),
        risk=Risk(level=risk, justification="declared by govern_tool") if risk else None,
        idempotent=operation is OperationType.READ,
        tags=("langchain",),
    )

    async def run_tool(**arguments: Any) -> JsonValue:
        value = await tool.ainvoke(arguments)
        return value if isinstance(value, str | int | float | bool | dict | list) else str(value)

    runtime.registry.register(Capability(spec=spec, handler=run_tool))
    return _as_tool(runtime, spec, principal, frozenset(roles))
