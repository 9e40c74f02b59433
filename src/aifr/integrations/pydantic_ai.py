"""aifr capabilities as PydanticAI tools (extra ``pydantic-ai``).

Each tool keeps its capability's input schema; PydanticAI validates the model's
arguments against it and the runtime validates them again, decides, audits and runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue

from aifr.capabilities import CapabilitySpec
from aifr.errors import ConfigError
from aifr.integrations.results import governed_call, selected_specs
from aifr.invocation import Runtime

if TYPE_CHECKING:
    from pydantic_ai import Tool

__all__ = ["aifr_tools"]


def _tool_name(capability_id: str) -> str:
    return capability_id.replace(".", "_")


def _caller(
    runtime: Runtime, spec: CapabilitySpec, principal: str, roles: frozenset[str]
) -> Callable[..., Any]:
    async def call(**arguments: Any) -> JsonValue:
        return await governed_call(runtime, spec.id, arguments, principal, roles)

    call.__name__ = _tool_name(spec.id)
    return call


def aifr_tools(
    runtime: Runtime,
    principal: str,
    *,
    capabilities: Iterable[str] = ("*",),
    roles: Iterable[str] = (),
) -> list[Tool[Any]]:
    """PydanticAI tools for the capabilities matching ``capabilities`` (globs).

    Tool names are the ids with ``.`` as ``_`` (model APIs refuse dots). Calls act as
    ``principal`` with ``roles``.

    Raises:
        ConfigError: PydanticAI is not installed (``pip install 'aifr[pydantic-ai]'``).
    """
    try:
        from pydantic_ai import Tool
    except ImportError as exc:
        raise ConfigError(
            "aifr.integrations.pydantic_ai needs PydanticAI: pip install 'aifr[pydantic-ai]'"
        ) from exc
    held = frozenset(roles)
    return [
        Tool.from_schema(
            _caller(runtime, spec, principal, held),
            name=_tool_name(spec.id),
            description=spec.description or spec.name,
            json_schema=dict(spec.input_schema),
        )
        for spec in selected_specs(runtime, capabilities)
    ]
