"""MCP resources: the capability manifest, the caller's recent audit records, run status.

``aifr://capabilities/manifest``  every registered capability version with fingerprints
``aifr://audit/recent``           the last audit records whose principal is the caller
``aifr://runs/{run_id}``          a workflow run's state and steps
``aifr://approvals/{approval_id}`` an approval's state (also the ``aifr.approvals.status`` tool)
``aifr://findings/{project}``     a page of a findings project's findings (query: ``run``,
                                  ``severity``, ``scanner``, ``triage_state``, ``cursor``)

A caller sees only their own audit records (the ledger is queried with the caller's
principal as a filter), their own runs and their own approval requests; someone
else's run or approval reads as not found, so ids reveal nothing. Findings are read by
invoking ``findings.list`` as the caller, so the policy decides and the read is audited.
"""

from __future__ import annotations

import json
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import anyio.to_thread
import mcp_types as types
from pydantic import JsonValue

from aifr.audit import AuditLedger
from aifr.capabilities import CapabilityRegistry, build_manifest
from aifr.errors import (
    ApprovalError,
    ErrorCode,
    FieldError,
    InputValidationError,
    TransportError,
)
from aifr.invocation import ApprovalRecord, ApprovalService, CallOptions, Runtime
from aifr.transports.mcp.auth import McpIdentity
from aifr.transports.mcp.results import error_result

__all__ = [
    "APPROVAL_URI_PREFIX",
    "AUDIT_URI",
    "FINDINGS_URI_PREFIX",
    "MANIFEST_URI",
    "RUN_URI_PREFIX",
    "ResourceCatalog",
    "RunReader",
]

MANIFEST_URI = "aifr://capabilities/manifest"
AUDIT_URI = "aifr://audit/recent"
RUN_URI_PREFIX = "aifr://runs/"
APPROVAL_URI_PREFIX = "aifr://approvals/"
FINDINGS_URI_PREFIX = "aifr://findings/"
_FINDINGS_FILTERS = ("run", "scanner", "triage_state", "resource_id", "cursor")
_AUDIT_LIMIT = 50


class RunReader(Protocol):
    """Reads a workflow run's status (implemented by the workflow tools)."""

    async def run_status(self, run_id: str, principal: str) -> JsonValue:
        """The run's state and steps as JSON, if ``principal`` started it.

        Raises:
            WorkflowError: ``workflow.run_not_found`` (also for another caller's run).
        """
        ...


def _status_argument_errors(arguments: dict[str, Any]) -> list[FieldError]:
    """What is wrong with ``aifr.approvals.status`` arguments, coded as capability inputs are.

    The tool's schema forbids other keys and asks for a non-empty string; an unknown
    key used to pass unseen, and a number was reported as a missing ``approval_id``.
    """
    errors = [
        FieldError(
            path=key,
            code="unexpected",
            message="Extra inputs are not permitted",
            received=_plain(value),
        )
        for key, value in arguments.items()
        if key != "approval_id"
    ]
    approval_id = arguments.get("approval_id")
    if "approval_id" not in arguments:
        problem = ("required", "Field required")
    elif not isinstance(approval_id, str):
        problem = ("type", "Input should be a valid string")
    elif not approval_id:
        problem = ("length", "String should have at least 1 character")
    else:
        return errors
    code, message = problem
    field = FieldError(
        path="approval_id",
        code=code,
        message=message,
        expected="string",
        received=_plain(approval_id),
    )
    return [field, *errors]


def _plain(value: Any) -> JsonValue:
    result: JsonValue = json.loads(json.dumps(value, default=_default))
    return result


def _default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if hasattr(value, "__dataclass_fields__"):
        return {name: getattr(value, name) for name in value.__dataclass_fields__}
    return str(value)


def _approval_view(record: ApprovalRecord) -> dict[str, JsonValue]:
    return {
        "approval_id": record.id,
        "status": record.status.value,
        "capability_id": record.capability_id,
        "capability_version": record.capability_version,
        "principal": record.principal,
        "risk": record.risk,
        "rule_id": record.rule_id,
        "reason": record.reason,
        "approver_roles": list(record.approver_roles),
        "quorum": record.quorum,
        "votes": [{"approver": v.approver, "at": v.at, "comment": v.comment} for v in record.votes],
        "decided_by": record.decided_by,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "consumed_at": record.consumed_at,
    }


class ResourceCatalog:
    """Reads the resources above for one caller."""

    def __init__(
        self,
        *,
        registry: CapabilityRegistry,
        approvals: ApprovalService,
        ledger: AuditLedger,
        runs: RunReader | None = None,
        runtime: Runtime | None = None,
        audit_limit: int = _AUDIT_LIMIT,
    ) -> None:
        self.registry = registry
        self.approvals = approvals
        self.ledger = ledger
        self.runs = runs
        self.runtime = runtime
        self.audit_limit = audit_limit

    def resources(self) -> list[types.Resource]:
        """The fixed resources."""
        return [
            types.Resource(
                uri=MANIFEST_URI,
                name="capability-manifest",
                title="Capability manifest",
                description="Every registered capability version with its fingerprint.",
                mime_type="application/json",
            ),
            types.Resource(
                uri=AUDIT_URI,
                name="recent-audit",
                title="My recent audit records",
                description=f"The last {self.audit_limit} audit records of the caller.",
                mime_type="application/json",
            ),
        ]

    def templates(self) -> list[types.ResourceTemplate]:
        """The parameterized resources."""
        templates = [
            types.ResourceTemplate(
                uri_template=APPROVAL_URI_PREFIX + "{approval_id}",
                name="approval",
                title="Approval status",
                mime_type="application/json",
            )
        ]
        if self._serves_findings():
            templates.append(
                types.ResourceTemplate(
                    uri_template=FINDINGS_URI_PREFIX + "{project}",
                    name="findings",
                    title="Findings of a project",
                    description=(
                        "A page of findings (findings.list, as the caller); query "
                        "?severity=high&run=R&scanner=S&triage_state=open&cursor=C"
                    ),
                    mime_type="application/json",
                )
            )
        if self.runs is not None:
            templates.append(
                types.ResourceTemplate(
                    uri_template=RUN_URI_PREFIX + "{run_id}",
                    name="run",
                    title="Workflow run status",
                    mime_type="application/json",
                )
            )
        return templates

    async def read(self, uri: str, who: McpIdentity) -> JsonValue:
        """The JSON body of ``uri`` as ``who`` may see it.

        Raises:
            TransportError: the URI names no resource.
            AifrError: the approval or run does not exist.
        """
        if uri == MANIFEST_URI:
            return build_manifest(self.registry)
        if uri == AUDIT_URI:
            records = await anyio.to_thread.run_sync(
                lambda: list(
                    self.ledger.records(
                        principal=who.principal, limit=self.audit_limit, newest_first=True
                    )
                )
            )
            return {"principal": who.principal, "records": [_plain(r) for r in records]}
        if uri.startswith(APPROVAL_URI_PREFIX):
            record = await self._own_approval(uri.removeprefix(APPROVAL_URI_PREFIX), who)
            return _approval_view(record)
        if uri.startswith(FINDINGS_URI_PREFIX) and self._serves_findings():
            return await self._findings(uri, who)
        if uri.startswith(RUN_URI_PREFIX) and self.runs is not None:
            return await self.runs.run_status(uri.removeprefix(RUN_URI_PREFIX), who.principal)
        raise TransportError(
            f"unknown resource {uri!r}: resources/list and resources/templates/list name "
            "the ones served",
            code=ErrorCode.TRANSPORT_NOT_FOUND,
            uri=uri,
        )

    def _serves_findings(self) -> bool:
        return self.runtime is not None and self.registry.get("findings.list") is not None

    async def _findings(self, uri: str, who: McpIdentity) -> JsonValue:
        """``findings.list`` invoked as ``who`` for the project and filters the URI names."""
        assert self.runtime is not None  # noqa: S101  # _serves_findings checked it
        parts = urlsplit(uri)
        query = parse_qs(parts.query)
        inputs: dict[str, JsonValue] = {"project": parts.path.lstrip("/")}  # host: "findings"
        for key in _FINDINGS_FILTERS:
            if key in query:
                inputs[key] = query[key][-1]
        if "severity" in query:
            inputs["severity"] = [s for item in query["severity"] for s in item.split(",")]
        result = await self.runtime.ainvoke(
            "findings.list", inputs, who.principal, CallOptions(roles=who.roles)
        )
        if result.error is not None:
            raise result.error
        return result.output

    async def _own_approval(self, approval_id: str, who: McpIdentity) -> ApprovalRecord:
        """The approval, if ``who`` asked for it; anyone else's reads as not found."""
        record = await self.approvals.aget(approval_id)
        if record.principal != who.principal:
            raise ApprovalError(
                f"no approval {approval_id!r} among the requests of {who.principal}",
                code=ErrorCode.APPROVAL_NOT_FOUND,
                approval_id=approval_id,
            )
        return record

    async def approval_status(
        self, arguments: dict[str, Any], who: McpIdentity
    ) -> types.CallToolResult:
        """The ``aifr.approvals.status`` tool: an approval's state, or a tool error."""
        approval_id = arguments.get("approval_id")
        errors = _status_argument_errors(arguments)
        if errors or not isinstance(approval_id, str):
            where = ", ".join(f"{e.path} ({e.code})" for e in errors)
            return error_result(
                InputValidationError(
                    f"invalid arguments for aifr.approvals.status: {where}", errors=errors
                )
            )
        try:
            record = await self._own_approval(approval_id, who)
        except ApprovalError as exc:
            return error_result(exc)
        view = _approval_view(record)
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=json.dumps(view, sort_keys=True))],
            structured_content=view,
        )
