"""The governed MCP server: every capability and workflow as a tool, over three transports.

Built on the SDK's low-level ``Server`` so tool listings come straight from the
capability registry, and every ``tools/call`` goes through ``Runtime.ainvoke`` (or the
workflow engine): the same validation, policy, approval, limits and audit as any other
caller. Nothing here decides; it translates.

The caller's identity comes from the transport: a configured identity on stdio, the
peer uid on the Unix socket, the bearer token on HTTP (see :mod:`.auth`).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from pydantic import JsonValue

from aifr import __version__
from aifr.app import App
from aifr.capabilities import CapabilityRegistry, CapabilitySpec
from aifr.errors import (
    AifrError,
    CapabilityNotFoundError,
    ErrorCode,
    FieldError,
    InputValidationError,
    TransportError,
    error_payload,
)
from aifr.invocation import ApprovalService, CallOptions, Result, Runtime, Status
from aifr.transports.mcp.approvals import ApprovalBridge
from aifr.transports.mcp.auth import IDENTITY_SCOPE_KEY, McpIdentity
from aifr.transports.mcp.gateway import UPSTREAM_PROGRESS, UPSTREAM_READ_TAG, Gateway
from aifr.transports.mcp.list_changed import ToolListWatchers
from aifr.transports.mcp.naming import ToolNames, ToolNaming
from aifr.transports.mcp.protocol import result_for_version, tool_for_version
from aifr.transports.mcp.resources import ResourceCatalog
from aifr.transports.mcp.results import APPROVAL_META_KEY, error_result, tool_result
from aifr.transports.mcp.rpc_errors import RpcErrorMiddleware
from aifr.transports.mcp.tools import (
    APPROVAL_STATUS_TOOL,
    approval_status_tool,
    tool_for_spec,
)
from aifr.transports.mcp.workflow_tools import WorkflowTools
from aifr.workflows import WorkflowSpec

__all__ = [
    "SERVER_NAME",
    "AifrMcpServer",
    "IdentityResolver",
    "ToolListing",
    "connection_identity",
    "fixed_identity",
    "http_identity",
]

logger = logging.getLogger(__name__)

SERVER_NAME = "aifr"
Ctx = ServerRequestContext[Any, Any]
IdentityResolver = Callable[[Ctx], McpIdentity]

ToolListing = Literal["permitted", "all"]
"""Which tools ``tools/list`` shows a caller: those it may use, or every one."""

_connection: contextvars.ContextVar[McpIdentity | None] = contextvars.ContextVar(
    "aifr_mcp_connection_identity", default=None
)


def fixed_identity(identity: McpIdentity) -> IdentityResolver:
    """Every request acts as ``identity`` (stdio: one client per process)."""
    return lambda _ctx: identity


def connection_identity(ctx: Ctx) -> McpIdentity:  # noqa: ARG001  # resolver signature
    """The identity bound to the current Unix-socket connection.

    Raises:
        TransportError: no identity was bound (the request did not come through
            :meth:`AifrMcpServer.serve_connection`).
    """
    identity = _connection.get()
    if identity is None:
        raise TransportError(
            "no identity is bound to this connection", code=ErrorCode.TRANSPORT_UNAUTHENTICATED
        )
    return identity


def http_identity(ctx: Ctx) -> McpIdentity:
    """The identity the bearer-token middleware put on the HTTP request.

    Raises:
        TransportError: the request carries no authenticated identity.
    """
    scope = getattr(ctx.request, "scope", None)
    identity = scope.get(IDENTITY_SCOPE_KEY) if isinstance(scope, dict) else None
    if not isinstance(identity, McpIdentity):
        raise TransportError(
            "request is not authenticated", code=ErrorCode.TRANSPORT_UNAUTHENTICATED
        )
    return identity


def _traceparent(ctx: Ctx) -> str | None:
    """The caller's W3C ``traceparent``: from ``_meta``, else the HTTP request's header."""
    meta: Mapping[str, object] = ctx.meta or {}  # free-form beyond progressToken
    given = meta.get("traceparent")
    if isinstance(given, str):
        return given
    scope = getattr(ctx.request, "scope", None)
    headers = scope.get("headers", ()) if isinstance(scope, dict) else ()
    for name, value in headers:
        if name == b"traceparent":
            return bytes(value).decode("latin-1")
    return None


class _Server(Server[Any]):
    """The SDK's low-level server, announcing that its tool list may change."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        """The SDK's options, with ``tools.listChanged`` (see :mod:`.list_changed`)."""
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


class _PendingCalls:
    """Calls waiting for approval, so the same call again carries the approval id.

    A call is the same when caller, tool and arguments are. Bounded: the oldest entries
    are forgotten first, and a forgotten approval can still be passed as
    ``_meta["aifr/approval_id"]``.
    """

    def __init__(self, limit: int = 1024) -> None:
        self._limit = limit
        self._items: OrderedDict[tuple[str, str, str], str] = OrderedDict()

    @staticmethod
    def key(who: McpIdentity, tool: str, arguments: dict[str, JsonValue]) -> tuple[str, str, str]:
        """The identity of a call: caller, tool and canonical arguments."""
        return (who.principal, tool, json.dumps(arguments, sort_keys=True, default=str))

    def remember(
        self, who: McpIdentity, tool: str, arguments: dict[str, JsonValue], approval_id: str
    ) -> None:
        """Note that this call waits on ``approval_id``."""
        key = self.key(who, tool, arguments)
        self._items[key] = approval_id
        self._items.move_to_end(key)
        while len(self._items) > self._limit:
            self._items.popitem(last=False)

    def get(self, who: McpIdentity, tool: str, arguments: dict[str, JsonValue]) -> str | None:
        """The approval this call waits on, if remembered."""
        if not self._items:  # the usual case: no canonical JSON per call
            return None
        return self._items.get(self.key(who, tool, arguments))

    def forget(self, who: McpIdentity, tool: str, arguments: dict[str, JsonValue]) -> None:
        """The call ran (or was refused); stop carrying its approval id."""
        if self._items:
            self._items.pop(self.key(who, tool, arguments), None)


class AifrMcpServer:
    """Serves a project's registry through the governed runtime as MCP tools."""

    def __init__(
        self,
        *,
        registry: CapabilityRegistry,
        runtime: Runtime,
        approvals: ApprovalService,
        resources: ResourceCatalog,
        identity: IdentityResolver,
        workflows: WorkflowTools | None = None,
        version: str = "",
        tool_naming: ToolNaming = ToolNaming.IDS,
        list_tools: ToolListing = "all",
        gateway: Gateway | None = None,
    ) -> None:
        self.registry = registry
        self.gateway = gateway
        self._upstreams_hosted = False
        self.tool_naming = tool_naming
        self.list_tools = list_tools
        self._names = ToolNames((), tool_naming)
        self._names_for = -1  # the registry size the names were built for
        self.workflows = workflows
        self.runtime = runtime
        self.approvals = approvals
        self.resources = resources
        self.identity = identity
        self.bridge = ApprovalBridge(approvals)
        self._waiting = _PendingCalls()
        self.watchers = ToolListWatchers(self._permitted_names)
        self.server: Server[Any] = _Server(
            SERVER_NAME,
            version=version,
            title="aifr, the AI-First Runtime",
            instructions=(
                "Every tool here is a governed capability: inputs are validated, a policy "
                "decides, some calls need a human approval, and everything is audited. "
                "A tool error explains a denial (rule and reason), a bad argument (field) "
                "or a pending approval (approval id and how to approve)."
            ),
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
            **self._prompt_handlers(gateway),
        )
        if gateway is not None:
            gateway.on_change(self._upstream_changed)
        security = RequestStateSecurity(keys=[os.urandom(32)], bind_principal=self._bound_principal)
        self.server.middleware.append(RpcErrorMiddleware())  # outermost: sees every refusal
        self.server.middleware.append(RequestStateBoundary(security, default_audience=SERVER_NAME))

    @classmethod
    def from_app(
        cls,
        app: App,
        *,
        identity: IdentityResolver,
        workflows: Iterable[WorkflowSpec] = (),
        tool_naming: ToolNaming = ToolNaming.IDS,
        list_tools: ToolListing = "all",
        gateway: Gateway | None = None,
    ) -> AifrMcpServer:
        """The server for a built project, with ``workflows`` offered as tools.

        Uses the app's registry, runtime, approvals, ledger and workflow engine.
        ``tool_naming`` lists tools by id or under portable names (see :mod:`.naming`);
        ``list_tools="permitted"`` leaves out the tools the policy always denies the caller;
        ``gateway`` serves third-party upstreams' tools (registered lazily, see
        :mod:`.gateway`), their progress and list changes, resources and prompts.
        """
        specs = list(workflows)
        tools = WorkflowTools(app.workflows, specs, app.registry) if specs else None
        server = cls(
            registry=app.registry,
            runtime=app.runtime,
            approvals=app.approvals,
            resources=ResourceCatalog(
                registry=app.registry,
                approvals=app.approvals,
                ledger=app.ledger,
                runs=tools,
                runtime=app.runtime,
            ),
            identity=identity,
            workflows=tools,
            version=__version__,
            tool_naming=tool_naming,
            list_tools=list_tools,
            gateway=gateway,
        )
        if list_tools == "permitted":
            app.policy.on_change(server.watchers.notify)
        return server

    def _bound_principal(self, ctx: Ctx) -> str | None:
        try:
            return self.identity(ctx).principal
        except TransportError:
            return None

    async def serve_connection(self, read: Any, write: Any, identity: McpIdentity) -> None:
        """Serve one stream connection (a Unix-socket client) as ``identity``."""
        token = _connection.set(identity)
        try:
            await self.server.run(read, write, self.server.create_initialization_options())
        finally:
            _connection.reset(token)

    # -- tools ------------------------------------------------------------------------

    def tools(self, who: McpIdentity | None = None) -> list[types.Tool]:
        """Every tool under its listed name: capabilities (latest version), workflows, status.

        With ``who``, a capability the policy denies that caller whatever the inputs is
        left out (a tool that may be allowed, or needs an approval, stays). An upstream's
        ``resources.read`` and ``prompts.get`` are not tools (the protocol has their own
        requests), though ``tools/call`` may still name them.
        """
        # an upstream's resource reads and prompt gets are resources/read and prompts/get
        specs = [s for s in self.registry.list() if UPSTREAM_READ_TAG not in s.tags]
        if who is not None:
            denies = self.runtime.policy.always_denies
            specs = [s for s in specs if not denies(s, who.principal, who.roles)]
        tools = [tool_for_spec(spec) for spec in specs]
        if self.workflows is not None:
            tools.extend(self.workflows.tools())
        tools.append(approval_status_tool())
        names = self.tool_names()
        if names.naming is ToolNaming.IDS:
            return tools
        return [tool.model_copy(update={"name": names.listed(tool.name)}) for tool in tools]

    def tool_names(self) -> ToolNames:
        """The listed name of each tool id, rebuilt only when a capability was registered."""
        registered = len(self.registry)  # registrations are never removed: a change counter
        if registered != self._names_for:
            ids = [spec.id for spec in self.registry.list()]
            if self.workflows is not None:
                ids.extend(self.workflows.specs)
            ids.append(APPROVAL_STATUS_TOOL)
            self._names, self._names_for = ToolNames(ids, self.tool_naming), registered
        return self._names

    async def _list_tools(
        self, ctx: Ctx, _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        version = ctx.protocol_version
        gateway = self.gateway
        self._host_upstreams()
        if gateway is not None and gateway.pending:  # lazily: the first listing starts them
            for failure in await asyncio.to_thread(gateway.ensure):
                logger.warning("%s (its tools are not served)", failure)
        who = self.identity(ctx) if self.list_tools == "permitted" else None
        tools = self.tools(who)
        self.watchers.remember(ctx.session, who, frozenset(t.name for t in tools))
        return types.ListToolsResult(tools=[tool_for_version(t, version) for t in tools])

    def _permitted_names(self, who: McpIdentity) -> frozenset[str]:
        return frozenset(tool.name for tool in self.tools(who))

    async def _call_tool(
        self, ctx: Ctx, params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        result = await self._answer_call(ctx, params)
        if isinstance(result, types.CallToolResult):
            return result_for_version(result, ctx.protocol_version)
        return result

    async def _answer_call(
        self, ctx: Ctx, params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        name = params.name
        try:
            names = self.tool_names()
            tool_id = names.resolve(name)
            who = self.identity(ctx)
            if tool_id == APPROVAL_STATUS_TOOL:
                return await self.resources.approval_status(params.arguments or {}, who)
            if self.workflows is not None and self.workflows.owns(tool_id):
                return await self.workflows.call(ctx, tool_id, params.arguments or {}, who)
            gateway = self.gateway
            self._host_upstreams()
            if gateway is not None and gateway.pending_for(tool_id):  # first call starts it
                await asyncio.to_thread(gateway.ensure_for, tool_id)
            return await self._invoke(ctx, tool_id, params, who, names)
        except AifrError as exc:
            return error_result(exc)
        except Exception:  # top-level handler: a bug must reach the client as a tool error
            logger.exception("tool %s failed unexpectedly", name)
            return error_result(AifrError(f"internal error while running tool {name}"))

    def _spec(self, name: str) -> CapabilitySpec:
        spec = self.registry.get(name)
        if spec is None:
            raise CapabilityNotFoundError(
                f"unknown tool {name!r}: no capability or workflow has that name",
                capability_id=name,
            )
        return spec

    async def _invoke(
        self,
        ctx: Ctx,
        name: str,
        params: types.CallToolRequestParams,
        who: McpIdentity,
        names: ToolNames,
    ) -> types.CallToolResult | types.InputRequiredResult:
        """Run capability ``name`` (an id) for the call ``params``; messages use listed names."""
        spec = self._spec(name)
        arguments: dict[str, JsonValue] = params.arguments or {}
        shown = names.listed(name)  # a pinned call (id@version) is shown as called
        status_tool = names.listed(APPROVAL_STATUS_TOOL)

        traceparent = _traceparent(ctx)
        if _wants_progress(ctx):  # an upstream tool's progress reaches this caller
            UPSTREAM_PROGRESS.set(ctx.session.report_progress)

        async def run(approval_id: str | None) -> Result:
            return await self.runtime.ainvoke(
                name,
                arguments,
                who.principal,
                CallOptions(
                    roles=who.roles,
                    approval_id=approval_id,
                    traceparent=traceparent,
                ),
            )

        def answer(result: Result) -> types.CallToolResult:
            return tool_result(spec, result, shown, status_tool=status_tool)

        async def reinvoke(approval_id: str) -> types.CallToolResult:
            self._waiting.forget(who, name, arguments)
            return answer(await run(approval_id))

        approval_id = self._approval_hint(ctx, who, name, arguments)
        answered = params.request_state is not None and params.input_responses is not None
        if answered and params.request_state:
            approval_id = params.request_state
            decided = await self.bridge.on_answer(
                params, approval_id=approval_id, who=who, reinvoke=reinvoke
            )
            if decided is not None:
                return decided
        result = await run(approval_id)
        if result.status is not Status.PENDING_APPROVAL:
            if approval_id is not None:
                self._waiting.forget(who, name, arguments)
            return answer(result)
        if result.approval_id is not None:
            self._waiting.remember(who, name, arguments, result.approval_id)
        if answered:
            return self.bridge.unrecorded(params, result, shown, status_tool=status_tool)
        return await self.bridge.on_pending(
            ctx,
            tool=shown,
            arguments=arguments,
            result=result,
            who=who,
            reinvoke=reinvoke,
            status_tool=status_tool,
        )

    def _approval_hint(
        self, ctx: Ctx, who: McpIdentity, tool: str, arguments: dict[str, JsonValue]
    ) -> str | None:
        meta: Mapping[str, object] | None = ctx.meta  # free-form beyond progressToken
        if meta is None or APPROVAL_META_KEY not in meta:
            return self._waiting.get(who, tool, arguments)
        explicit = meta[APPROVAL_META_KEY]
        if not isinstance(explicit, str) or not explicit:
            # Ignoring it would open a second approval for a call the human already decided.
            path = f"_meta[{APPROVAL_META_KEY!r}]"
            raise InputValidationError(
                f"{path} must be an approval id (a non-empty string), got {explicit!r}",
                errors=[
                    FieldError(
                        path=path,
                        code="type" if not isinstance(explicit, str) else "length",
                        message="an approval id is a non-empty string",
                        received=explicit if isinstance(explicit, str | int | float) else None,
                    )
                ],
            )
        return explicit

    # -- resources ----------------------------------------------------------------------

    async def _list_resources(
        self, _ctx: Ctx, _params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        resources = self.resources.resources()
        if self.gateway is not None:
            resources = [*resources, *await self.gateway.list_resources()]
        return types.ListResourcesResult(resources=resources)

    async def _list_resource_templates(
        self, _ctx: Ctx, _params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=self.resources.templates())

    async def _read_resource(
        self, ctx: Ctx, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        gateway = self.gateway
        if gateway is not None and gateway.owns_resource(str(params.uri)):
            output = await self._governed_read(ctx, lambda: gateway.resource_call(str(params.uri)))
            return types.ReadResourceResult.model_validate(output)
        try:
            body = await self.resources.read(params.uri, self.identity(ctx))
        except AifrError as exc:
            # Resource reads have no isError result: the protocol error carries the payload.
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"{exc.code.value}: {exc.message}",
                data=error_payload(exc),
            ) from exc
        return types.ReadResourceResult(
            contents=[
                types.TextResourceContents(
                    uri=params.uri,
                    mime_type="application/json",
                    text=json.dumps(body, indent=2, sort_keys=True, default=str),
                )
            ]
        )

    # -- upstreams: prompts and list changes ------------------------------------------------

    def _host_upstreams(self) -> None:
        """Once: upstreams not started yet will live on this server's loop (no hand-offs)."""
        if self.gateway is not None and not self._upstreams_hosted:
            self._upstreams_hosted = True
            self.gateway.host_on(asyncio.get_running_loop())

    def _prompt_handlers(self, gateway: Gateway | None) -> dict[str, Any]:
        if gateway is None or not any(u.config.prompts for u in gateway.upstreams()):
            return {}
        return {"on_list_prompts": self._list_prompts, "on_get_prompt": self._get_prompt}

    async def _list_prompts(
        self, _ctx: Ctx, _params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        prompts = await self.gateway.list_prompts() if self.gateway is not None else []
        return types.ListPromptsResult(prompts=prompts)

    async def _get_prompt(
        self, ctx: Ctx, params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        gateway = self.gateway
        if gateway is None:  # not registered without one
            raise MCPError(code=INVALID_PARAMS, message=f"unknown prompt {params.name!r}")
        output = await self._governed_read(
            ctx, lambda: gateway.prompt_call(params.name, params.arguments)
        )
        return types.GetPromptResult.model_validate(output)

    async def _governed_read(
        self, ctx: Ctx, call: Callable[[], tuple[str, dict[str, JsonValue]]]
    ) -> JsonValue:
        """Run an upstream resource read or prompt get through ``Runtime.ainvoke``.

        Its output, or a protocol error carrying the one error payload: reads have no
        ``isError`` result, so a denial (naming the rule), a pending approval or a
        failure of the upstream is an ``INVALID_PARAMS`` error.
        """
        try:
            capability_id, inputs = call()
            who = self.identity(ctx)
            self._host_upstreams()
            result = await self.runtime.ainvoke(
                capability_id,
                inputs,
                who.principal,
                CallOptions(roles=who.roles, traceparent=_traceparent(ctx)),
            )
            if result.error is not None:
                raise result.error
        except AifrError as exc:
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"{exc.code.value}: {exc.message}",
                data=error_payload(exc),
            ) from exc
        return result.output

    def _upstream_changed(self, upstream: object, what: str) -> None:
        """An upstream said its list changed: tell every connected client the same."""
        sent = self.watchers.broadcast(what)
        logger.info(
            "%s/list_changed from upstream %s passed to %d client(s)",
            what,
            getattr(upstream, "name", upstream),
            sent,
        )


def _wants_progress(ctx: Ctx) -> bool:
    meta: Mapping[str, object] = ctx.meta or {}
    return meta.get("progress_token") is not None or meta.get("progressToken") is not None
