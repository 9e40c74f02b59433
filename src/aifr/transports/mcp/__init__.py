"""The MCP server (DESIGN.md part I): governed tools over stdio, streamable HTTP and a Unix socket."""

from aifr.transports.mcp.approvals import APPROVAL_SCHEMA, ApprovalBridge, supports_form_elicitation
from aifr.transports.mcp.auth import (
    IDENTITY_SCOPE_KEY,
    BearerAuthMiddleware,
    McpIdentity,
    identity_of,
)
from aifr.transports.mcp.naming import PORTABLE_NAME, ToolNames, ToolNaming, portable_name
from aifr.transports.mcp.protocol import result_for_version, supports, tool_for_version
from aifr.transports.mcp.resources import (
    APPROVAL_URI_PREFIX,
    AUDIT_URI,
    MANIFEST_URI,
    RUN_URI_PREFIX,
    ResourceCatalog,
    RunReader,
)
from aifr.transports.mcp.results import (
    APPROVAL_META_KEY,
    error_result,
    ok_result,
    pending_result,
    tool_result,
)
from aifr.transports.mcp.runners import UidPrincipals, serve_http, serve_stdio, serve_uds
from aifr.transports.mcp.server import (
    SERVER_NAME,
    AifrMcpServer,
    IdentityResolver,
    connection_identity,
    fixed_identity,
    http_identity,
)
from aifr.transports.mcp.tools import (
    APPROVAL_STATUS_TOOL,
    annotations_for,
    approval_status_tool,
    output_schema_for,
    structured_output,
    tool_for_spec,
)
from aifr.transports.mcp.uds import (
    PeerCredentials,
    peer_credentials,
    prepare_socket_path,
    serve_unix,
    unix_client,
)
from aifr.transports.mcp.workflow_tools import WORKFLOW_TOOL_PREFIX, WorkflowTools

__all__ = [
    "APPROVAL_META_KEY",
    "APPROVAL_SCHEMA",
    "APPROVAL_STATUS_TOOL",
    "APPROVAL_URI_PREFIX",
    "AUDIT_URI",
    "IDENTITY_SCOPE_KEY",
    "MANIFEST_URI",
    "PORTABLE_NAME",
    "RUN_URI_PREFIX",
    "SERVER_NAME",
    "WORKFLOW_TOOL_PREFIX",
    "AifrMcpServer",
    "ApprovalBridge",
    "BearerAuthMiddleware",
    "IdentityResolver",
    "McpIdentity",
    "PeerCredentials",
    "ResourceCatalog",
    "RunReader",
    "ToolNames",
    "ToolNaming",
    "UidPrincipals",
    "WorkflowTools",
    "annotations_for",
    "approval_status_tool",
    "connection_identity",
    "error_result",
    "fixed_identity",
    "http_identity",
    "ok_result",
    "output_schema_for",
    "peer_credentials",
    "pending_result",
    "portable_name",
    "prepare_socket_path",
    "result_for_version",
    "serve_http",
    "serve_stdio",
    "serve_uds",
    "serve_unix",
    "structured_output",
    "supports",
    "supports_form_elicitation",
    "identity_of",
    "tool_for_spec",
    "tool_for_version",
    "tool_result",
    "unix_client",
]
