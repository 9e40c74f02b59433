"""The MCP gateway: third-party MCP servers' tools as governed capabilities.

Each tool an upstream exposes becomes the capability ``<upstream>.<tool>``: its input
schema is the upstream's, its risk comes from the first ``risk`` entry whose glob
matches the tool (an undeclared tool is a HIGH-risk WRITE), and its handler calls the
upstream through :class:`~aifr.transports.mcp.upstream.Upstream`. Registered in the
app's registry, these capabilities go through ``Runtime.invoke`` like any other:
validation, policy, approval, audit (the record names the upstream and its server
version), the circuit breaker, and the upstream's own call budget.

A tool's schema or risk changing since a policy was written changes its fingerprint,
which the audit records with every call.

Upstreams start lazily: one with a reviewed tool list is registered from it and starts
on its first call; one without is registered when something first needs its tools (a
``tools/list``, or a lookup of ``<upstream>.<tool>`` through the registry's fallback),
which starts it. A call's progress goes to :data:`UPSTREAM_PROGRESS`, set by the
transport for the request it serves.

Resources and prompts of an upstream configured with ``resources``/``prompts`` are
served read-only, and governed like its tools: reading one is a call of the synthesized
capability ``<upstream>.resources.read`` (input ``{"uri": ...}``), getting a prompt one
of ``<upstream>.prompts.get`` (``{"name": ..., "arguments": {...}}``), both READ at LOW
risk, through ``Runtime.invoke``: the policy decides each read and the audit records it.
Listing them is not a call (it reads nothing but names).
"""

from __future__ import annotations

import asyncio
import contextvars
import fnmatch
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import mcp_types as types
from pydantic import JsonValue

from aifr.capabilities import (
    Capability,
    CapabilityRegistry,
    CapabilitySpec,
    Compensation,
    OperationType,
    Risk,
    RiskLevel,
    SideEffects,
)
from aifr.config import UpstreamSettings, UpstreamToolRisk
from aifr.errors import AifrError, ErrorCode, TransportError
from aifr.invocation.context import UPSTREAM_AUDIT_KEY, current_request
from aifr.transports.mcp.upstream import ChangeListener, Progress, SecretLookup, Upstream
from aifr.transports.mcp.upstream_catalog import changed_tools, load_catalog, save_catalog
from aifr.workflows import render_inputs

__all__ = [
    "PROMPT_GET",
    "RESOURCE_READ",
    "UPSTREAM_PROGRESS",
    "UPSTREAM_READ_TAG",
    "UPSTREAM_TAG",
    "Gateway",
    "UpstreamTool",
    "capability_id_for",
    "risk_entry_for",
    "spec_for_tool",
]

UPSTREAM_TAG = "mcp-upstream"
UPSTREAM_READ_TAG = "mcp-upstream-read"
"""Tags the synthesized resource-read and prompt-get capabilities (not listed as tools)."""
RESOURCE_READ = "resources.read"
"""``<upstream>.resources.read``: read one of the upstream's resources, governed."""
PROMPT_GET = "prompts.get"
"""``<upstream>.prompts.get``: get one of the upstream's prompts, governed."""
UPSTREAM_PROGRESS: contextvars.ContextVar[Progress | None] = contextvars.ContextVar(
    "aifr_upstream_progress", default=None
)
"""Where the upstream call made in this context sends the server's progress (or nowhere)."""
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]")
_DEFAULT_LEVEL = {
    OperationType.READ: RiskLevel.LOW,
    OperationType.WRITE: RiskLevel.MEDIUM,
    OperationType.DELETE: RiskLevel.HIGH,
    OperationType.EXECUTE: RiskLevel.HIGH,
    OperationType.NETWORK: RiskLevel.MEDIUM,
}


def capability_id_for(upstream: str, tool: str) -> str:
    """``<upstream>.<tool>``, the tool name made a valid id segment (``_`` for others)."""
    segment = _NOT_ID.sub("_", tool) or "_"
    if not segment[0].isalpha() and segment[0] != "_":
        segment = "_" + segment
    return f"{upstream}.{segment}"


def risk_entry_for(config: UpstreamSettings, tool: str) -> UpstreamToolRisk | None:
    """The first ``risk`` entry whose glob matches ``tool`` (``None``: undeclared)."""
    return next((r for r in config.risk if fnmatch.fnmatchcase(tool, r.tools)), None)


def _exposed(config: UpstreamSettings, tool: str) -> bool:
    return any(fnmatch.fnmatchcase(tool, pattern) for pattern in config.expose)


def spec_for_tool(
    config: UpstreamSettings, tool: types.Tool, server: types.Implementation | None
) -> CapabilitySpec:
    """The capability spec one upstream tool stands for.

    Raises:
        RiskConsistencyError: the declared risk is too low for the declared effects.
    """
    entry = risk_entry_for(config, tool.name)
    schema: dict[str, JsonValue] = dict(tool.input_schema)
    schema.setdefault("type", "object")
    output = dict(tool.output_schema) if tool.output_schema else None
    if entry is not None and entry.compensation:
        output = None  # the output gains an ``undo`` object the tool's schema does not know
    facts = f"[upstream {config.name}: {server.name} {server.version}]" if server else ""
    description = "\n\n".join(part for part in (tool.description or "", facts) if part)
    tags = (UPSTREAM_TAG, f"upstream:{config.name}")
    common: dict[str, Any] = {
        "id": capability_id_for(config.name, tool.name),
        "name": tool.title or tool.name,
        "description": description,
        "input_schema": schema,
        "output_schema": output,
        "tags": tags,
        "timeout_s": config.timeout_s,
    }
    if entry is None:  # undeclared: assume the worst a reversible change can be
        return CapabilitySpec(
            **common,
            operation_type=OperationType.WRITE,
            side_effects=SideEffects(reversible=True, scope="external"),
        )
    operation = OperationType(entry.operation)
    level = RiskLevel(entry.risk) if entry.risk else _DEFAULT_LEVEL[operation]
    if not entry.reversible and level is RiskLevel.MEDIUM and entry.risk is None:
        level = RiskLevel.HIGH
    compensation = (
        Compensation(supported=True, strategy="capability", capability_id=entry.compensation)
        if entry.compensation
        else Compensation()
    )
    return CapabilitySpec(
        **common,
        operation_type=operation,
        side_effects=SideEffects(reversible=entry.reversible, scope=entry.scope),
        compensation=compensation,
        risk=Risk(
            level=level,
            justification=f"declared for {entry.tools!r} in [[mcp.upstreams]] {config.name}",
            requires_approval=entry.requires_approval,
        ),
        idempotent=operation is OperationType.READ,
    )


def _output(result: types.CallToolResult) -> JsonValue:
    """An upstream tool's result as the capability's output.

    Structured content when the tool gives it; otherwise the content items (text as
    text) under ``content``.
    """
    if result.structured_content is not None:
        return dict(result.structured_content)
    items: list[JsonValue] = []
    for item in result.content:
        if isinstance(item, types.TextContent):
            items.append({"type": "text", "text": item.text})
        else:
            items.append(item.model_dump(mode="json", by_alias=True, exclude_none=True))
    return {"content": items}


def _failure_text(result: types.CallToolResult) -> str:
    texts = [item.text for item in result.content if isinstance(item, types.TextContent)]
    return " ".join(texts)[:500] or "no message"


def _with_undo(
    entry: UpstreamToolRisk, tool: str, arguments: dict[str, Any], output: JsonValue
) -> JsonValue:
    """``output`` with the ``undo`` arguments its compensation capability will be called with.

    Raises:
        WorkflowError: ``workflow.template_failed``: a template names what is not there.
    """
    undo = render_inputs(
        entry.compensation_arguments,
        {"inputs": arguments, "output": output},
        where=f"compensation_arguments of {tool}",
    )
    base = output if isinstance(output, dict) else {"result": output}
    return {**base, "undo": undo}


def _handler(upstream: Upstream, tool: str) -> Callable[..., Any]:
    entry = risk_entry_for(upstream.config, tool)
    compensated = entry if entry is not None and entry.compensation else None

    async def call_upstream(**arguments: Any) -> JsonValue:
        try:
            result = await upstream.call(tool, arguments, progress=UPSTREAM_PROGRESS.get())
        finally:  # once, after the call: the version is known once the server has started
            context = current_request()
            if context is not None:
                context.set(UPSTREAM_AUDIT_KEY, upstream.audit_facts(tool))
        if result.is_error:
            raise TransportError(
                f"upstream {upstream.name!r} tool {tool!r} failed: {_failure_text(result)}",
                code=ErrorCode.TRANSPORT_UPSTREAM_TOOL_FAILED,
                upstream=upstream.name,
                tool=tool,
            )
        if compensated is not None:
            return _with_undo(compensated, tool, arguments, _output(result))
        return _output(result)

    call_upstream.__name__ = f"upstream_{upstream.name}_{_NOT_ID.sub('_', tool)}"
    return call_upstream


def _shown_uri(uri: str) -> str:
    """``uri`` as the audit record names it: no user info, query or fragment (secrets hide there)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _read_spec(config: UpstreamSettings, what: str) -> CapabilitySpec:
    """The READ/LOW spec of ``<upstream>.resources.read`` or ``<upstream>.prompts.get``."""
    if what == RESOURCE_READ:
        schema: dict[str, JsonValue] = {
            "type": "object",
            "properties": {"uri": {"type": "string", "minLength": 1}},
            "required": ["uri"],
            "additionalProperties": False,
        }
        description = f"Read a resource of the upstream MCP server {config.name!r}."
    else:
        schema = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "arguments": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "required": ["name"],
            "additionalProperties": False,
        }
        description = f"Get a prompt of the upstream MCP server {config.name!r}."
    return CapabilitySpec(
        id=f"{config.name}.{what}",
        name=f"{config.name} {what}",
        description=description,
        input_schema=schema,
        tags=(UPSTREAM_TAG, UPSTREAM_READ_TAG, f"upstream:{config.name}"),
        timeout_s=config.timeout_s,
        operation_type=OperationType.READ,
        side_effects=SideEffects(reversible=True, scope="external"),
        risk=Risk(
            level=RiskLevel.LOW,
            justification=f"a read-only {what} of [[mcp.upstreams]] {config.name}",
        ),
        idempotent=True,
    )


def _read_handler(upstream: Upstream, what: str) -> Callable[..., Any]:
    async def read_upstream(**inputs: Any) -> JsonValue:
        context = current_request()
        facts = upstream.audit_facts(what)
        if what == RESOURCE_READ:
            uri: str = inputs["uri"]
            facts["resource"] = _shown_uri(uri)
            if context is not None:
                context.set(UPSTREAM_AUDIT_KEY, facts)
            result: types.ReadResourceResult | types.GetPromptResult = await upstream.request(
                lambda c: c.read_resource(uri), budgeted=True
            )
        else:
            name: str = inputs["name"]
            arguments: dict[str, str] | None = inputs.get("arguments")
            facts["prompt"] = name
            if context is not None:
                context.set(UPSTREAM_AUDIT_KEY, facts)
            result = await upstream.request(lambda c: c.get_prompt(name, arguments), budgeted=True)
        if context is not None:  # the version is known once the server has started
            context.set(UPSTREAM_AUDIT_KEY, {**facts, **upstream.audit_facts(what)})
        dumped: JsonValue = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        return dumped

    read_upstream.__name__ = f"upstream_{upstream.name}_{what.replace('.', '_')}"
    return read_upstream


def read_capabilities(config: UpstreamSettings, upstream: Upstream) -> list[Capability]:
    """The synthesized read capabilities of an upstream sharing resources or prompts."""
    wanted = [
        w for w, on in ((RESOURCE_READ, config.resources), (PROMPT_GET, config.prompts)) if on
    ]
    return [
        Capability(spec=_read_spec(config, w), handler=_read_handler(upstream, w)) for w in wanted
    ]


@dataclass(frozen=True)
class UpstreamTool:
    """One tool of an upstream as the gateway serves it."""

    upstream: str
    tool: str
    capability_id: str
    exposed: bool
    risk: str
    operation: str
    declared: bool
    changed: bool = False


@dataclass
class _Served:
    upstream: Upstream
    error: str | None = None
    registered: bool = False


class Gateway:
    """Every configured upstream, and the capabilities their tools became.

    Args:
        upstreams: the ``[[mcp.upstreams]]`` entries.
        resolve_secret: turns ``secret://NAME`` into its value.
        errlog: where stdio servers' stderr goes.
        catalog_dir: where reviewed tool lists are kept (see :mod:`.upstream_catalog`);
            ``None`` starts every upstream to list its tools.
    """

    def __init__(
        self,
        upstreams: Iterable[UpstreamSettings],
        resolve_secret: SecretLookup,
        *,
        errlog: TextIO | None = None,
        catalog_dir: Path | None = None,
    ) -> None:
        self._catalog_dir = catalog_dir
        self._registry: CapabilityRegistry | None = None
        self._register_lock = threading.RLock()
        self._resource_owner: dict[str, Upstream] = {}
        self._served: dict[str, _Served] = {}
        for config in upstreams:
            if config.name in self._served:
                raise TransportError(
                    f"[[mcp.upstreams]]: the name {config.name!r} is used twice",
                    code=ErrorCode.TRANSPORT_FAILED,
                    upstream=config.name,
                )
            self._served[config.name] = _Served(Upstream(config, resolve_secret, errlog=errlog))

    def __len__(self) -> int:
        return len(self._served)

    def upstream(self, name: str) -> Upstream:
        """The upstream called ``name``.

        Raises:
            TransportError: ``transport.not_found``: no upstream has that name.
        """
        served = self._served.get(name)
        if served is None:
            known = ", ".join(sorted(self._served)) or "none configured"
            raise TransportError(
                f"no upstream named {name!r} (known: {known})",
                code=ErrorCode.TRANSPORT_NOT_FOUND,
                upstream=name,
            )
        return served.upstream

    def upstreams(self) -> list[Upstream]:
        """Every upstream, in configuration order."""
        return [served.upstream for served in self._served.values()]

    def error(self, name: str) -> str | None:
        """Why the upstream's tools could not be registered, if they could not."""
        return self._served[name].error

    def _catalog(self, upstream: Upstream) -> Path | None:
        directory = self._catalog_dir
        return directory / f"{upstream.name}.json" if directory is not None else None

    def review(self, upstream: Upstream) -> frozenset[str]:
        """Start the upstream, and record its live tool list as the reviewed one.

        Returns the tools that changed since the previous review (none the first time).

        Raises:
            TransportError: the upstream does not start, or its old list is unreadable.
        """
        upstream.start()
        path = self._catalog(upstream)
        if path is None:
            return frozenset()
        before = load_catalog(path)
        save_catalog(path, upstream.server, upstream.tools)
        upstream.reviewed, upstream.drift = list(upstream.tools), frozenset()
        return changed_tools(before.tools, upstream.tools) if before is not None else frozenset()

    def capabilities(self, upstream: Upstream) -> list[Capability]:
        """The capabilities of the upstream's exposed tools.

        From the reviewed tool list when there is one (the upstream starts on its first
        call); otherwise the upstream starts now to list them, and that list is recorded.

        Raises:
            TransportError: the upstream does not start.
            RiskConsistencyError: a declared risk contradicts its effects.
        """
        path = self._catalog(upstream)
        catalog = load_catalog(path) if path is not None else None
        if catalog is None:
            self.review(upstream)
            server, tools = upstream.server, upstream.tools
        else:
            upstream.reviewed = catalog.tools
            server, tools = catalog.server, catalog.tools
        config = upstream.config
        return [
            Capability(
                spec=spec_for_tool(config, tool, server), handler=_handler(upstream, tool.name)
            )
            for tool in tools
            if _exposed(config, tool.name)
        ]

    def register(self, registry: CapabilityRegistry, *, lazy: bool = False) -> list[str]:
        """Register every upstream's exposed tools; an upstream that fails is skipped.

        With ``lazy``, an upstream without a reviewed tool list is not started now: it
        is registered by :meth:`ensure` (the first ``tools/list``) or when the registry
        is asked for one of its ids, whichever comes first.

        Returns the failures as lines naming the upstream and why (the rest are served).
        """
        self._registry = registry
        if lazy:
            registry.add_fallback(self._fallback)
        failures: list[str] = []
        known = {spec.id for spec in registry.list()}  # no lookup: no fallback
        for served in self._served.values():  # no tool list needed: never starts one
            for capability in read_capabilities(served.upstream.config, served.upstream):
                if capability.spec.id not in known:
                    registry.register(capability)
        for name, served in self._served.items():
            path = self._catalog(served.upstream)
            if lazy and (path is None or not path.exists()):
                continue  # no reviewed list: registered when first needed, which starts it
            failure = self._register_one(name, served)
            if failure is not None:
                failures.append(failure)
        return failures

    def _register_one(self, name: str, served: _Served) -> str | None:
        registry = self._registry
        if registry is None:
            return None
        with self._register_lock:
            if served.registered:
                return None
            try:
                known = {spec.id for spec in registry.list()}  # no lookup: no fallback
                for capability in self.capabilities(served.upstream):
                    if capability.spec.id not in known:
                        registry.register(capability)
            except AifrError as exc:
                served.error = exc.message
                return f"upstream {name}: {exc.message}"
            served.registered, served.error = True, None
            return None

    def ensure(self) -> list[str]:
        """Register the upstreams not registered yet (starting them); the failures."""
        failures = []
        for name, served in self._served.items():
            if not served.registered:
                failure = self._register_one(name, served)
                if failure is not None:
                    failures.append(failure)
        return failures

    @property
    def pending(self) -> bool:
        """Whether an upstream's tools are not registered yet."""
        return any(not served.registered for served in self._served.values())

    def pending_for(self, capability_id: str) -> bool:
        """Whether ``capability_id`` names an upstream whose tools are not registered yet."""
        served = self._served.get(capability_id.split(".", 1)[0])
        return served is not None and not served.registered and "." in capability_id

    def ensure_for(self, capability_id: str) -> bool:
        """Register the tools of the upstream ``capability_id`` names (starting it).

        ``True`` when they were registered now; the registry's fallback.
        """
        if not self.pending_for(capability_id):
            return False
        name = capability_id.split(".", 1)[0]
        return self._register_one(name, self._served[name]) is None

    _fallback = ensure_for

    def host_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Keep the upstreams not started yet on ``loop`` (see :meth:`Upstream.host_on`)."""
        for served in self._served.values():
            served.upstream.host_on(loop)

    def on_change(self, listener: ChangeListener) -> None:
        """Tell ``listener`` when an upstream says its tools, resources or prompts changed."""
        for served in self._served.values():
            served.upstream.on_change(listener)

    # -- resources and prompts, read-only -------------------------------------------------

    def _sharing(self, what: str) -> list[Upstream]:
        return [
            s.upstream
            for s in self._served.values()
            if getattr(s.upstream.config, what) and s.error is None
        ]

    async def list_resources(self) -> list[types.Resource]:
        """The resources of the upstreams configured with ``resources = true``.

        An upstream that fails to answer is left out (and logged by its connection).
        """
        listed: list[types.Resource] = []
        for upstream in self._sharing("resources"):
            try:
                page = await upstream.request(lambda c: c.list_resources())
            except AifrError:
                continue
            for resource in page.resources:
                self._resource_owner[str(resource.uri)] = upstream
                listed.append(
                    resource.model_copy(update={"name": f"{upstream.name}.{resource.name}"})
                )
        return listed

    def owns_resource(self, uri: str) -> bool:
        """Whether ``uri`` was listed by an upstream."""
        return uri in self._resource_owner

    def resource_call(self, uri: str) -> tuple[str, dict[str, JsonValue]]:
        """The governed call that reads ``uri``: ``<upstream>.resources.read`` and its input.

        Raises:
            TransportError: ``transport.not_found``: no upstream listed ``uri``.
        """
        upstream = self._resource_owner.get(uri)
        if upstream is None:
            raise TransportError(
                f"no upstream lists the resource {uri!r}",
                code=ErrorCode.TRANSPORT_NOT_FOUND,
                uri=uri,
            )
        return f"{upstream.name}.{RESOURCE_READ}", {"uri": uri}

    async def list_prompts(self) -> list[types.Prompt]:
        """The prompts of the upstreams configured with ``prompts = true``, as ``<upstream>.<name>``."""
        listed: list[types.Prompt] = []
        for upstream in self._sharing("prompts"):
            try:
                page = await upstream.request(lambda c: c.list_prompts())
            except AifrError:
                continue
            listed.extend(
                prompt.model_copy(update={"name": f"{upstream.name}.{prompt.name}"})
                for prompt in page.prompts
            )
        return listed

    def prompt_call(
        self, name: str, arguments: dict[str, str] | None
    ) -> tuple[str, dict[str, JsonValue]]:
        """The governed call that gets ``<upstream>.<prompt>``: ``<upstream>.prompts.get`` and its input.

        Raises:
            TransportError: ``transport.not_found``: no upstream shares prompts under
                that name.
        """
        owner, _, prompt = name.partition(".")
        served = self._served.get(owner)
        if served is None or not prompt or not served.upstream.config.prompts:
            raise TransportError(
                f"no upstream shares the prompt {name!r}",
                code=ErrorCode.TRANSPORT_NOT_FOUND,
                prompt=name,
            )
        inputs: dict[str, JsonValue] = {"name": prompt}
        if arguments is not None:
            inputs["arguments"] = dict(arguments)
        return f"{owner}.{PROMPT_GET}", inputs

    def tools(self, upstream: Upstream) -> list[UpstreamTool]:
        """Every tool the upstream lists now, with what the gateway makes of it.

        Listing reviews: the list becomes the reviewed one, and each tool that changed
        since the previous review is marked ``changed``.

        Raises:
            TransportError: the upstream does not start.
        """
        changed = self.review(upstream)
        config = upstream.config
        rows = []
        for tool in upstream.tools:
            entry = risk_entry_for(config, tool.name)
            spec = spec_for_tool(config, tool, upstream.server)
            rows.append(
                UpstreamTool(
                    upstream=upstream.name,
                    tool=tool.name,
                    capability_id=spec.id,
                    exposed=_exposed(config, tool.name),
                    risk=spec.effective_risk.value,
                    operation=spec.operation_type.value,
                    declared=entry is not None,
                    changed=tool.name in changed,
                )
            )
        return rows

    def close(self) -> None:
        """Stop every upstream."""
        for served in self._served.values():
            served.upstream.close()
