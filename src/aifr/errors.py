"""The one error tree of aifr.

Every error a user can catch derives from :class:`AifrError` and carries a stable
:class:`ErrorCode`. Codes are never renamed or reused: the API, the MCP server, the CLI
and the audit ledger all key on them.

```
AifrError
├── CapabilityError                 a capability spec is malformed or cannot be found
│   ├── RiskConsistencyError        a spec breaks one of the three Risk Consistency rules
│   ├── CapabilityNotFoundError     no capability with that id (or id@version) is registered
│   ├── DuplicateCapabilityError    the same id and version is registered twice
│   └── CircuitOpenError            a capability's circuit breaker is open
├── InputValidationError            inputs do not match the capability's input schema
├── OutputValidationError           a handler's result does not match the output schema
├── PolicyError                     a policy file cannot be loaded or evaluated
│   └── PolicyDeniedError           the policy answered DENY (rate limits included)
├── ApprovalError                   an approval cannot be created, granted or consumed
├── ExecutionError                  a handler raised, timed out or was refused by a limit
│   ├── ExecutionTimeoutError       a handler ran past its timeout
│   └── SandboxRefusalError         a confinement rule refused the action (path, host, command)
├── WorkflowError                   a workflow spec is malformed or a run cannot proceed
├── StorageError                    the state database failed or holds unexpected data
├── AuditError                      the audit ledger cannot append, verify or export
├── ConfigError                     a setting or the project layout is invalid
├── PluginError                     a plugin cannot be found, validated or loaded
│   └── PluginPermissionError       a plugin's call needs a permission its manifest did not ask for
├── FindingsError                   scanner output or a finding is invalid
├── IngestError                     a workspace or archive cannot be ingested
└── TransportError                  a transport (MCP, HTTP) cannot serve a request
```
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from pydantic import JsonValue

__all__ = [
    "AifrError",
    "ApprovalError",
    "AuditError",
    "CapabilityError",
    "CapabilityNotFoundError",
    "CircuitOpenError",
    "ConfigError",
    "DuplicateCapabilityError",
    "ErrorCode",
    "ExecutionError",
    "ExecutionTimeoutError",
    "FieldError",
    "FindingsError",
    "IngestError",
    "InputValidationError",
    "OutputValidationError",
    "PluginError",
    "PluginPermissionError",
    "PolicyDeniedError",
    "PolicyError",
    "RiskConsistencyError",
    "SandboxRefusalError",
    "StorageError",
    "TransportError",
    "UnconfirmedCommitError",
    "WorkflowError",
    "error_payload",
    "exit_code_for",
    "http_status_for",
]


class ErrorCode(StrEnum):
    """Stable dotted error codes; never renamed, never reused."""

    INTERNAL = "internal"
    CAPABILITY_INVALID = "capability.invalid"
    CAPABILITY_RISK_INCONSISTENT = "capability.risk_inconsistent"
    CAPABILITY_NOT_FOUND = "capability.not_found"
    CAPABILITY_VERSION_NOT_FOUND = "capability.version_not_found"
    CAPABILITY_DUPLICATE = "capability.duplicate"
    CAPABILITY_BAD_REFERENCE = "capability.bad_reference"
    CAPABILITY_FINGERPRINT_MISMATCH = "capability.fingerprint_mismatch"
    CIRCUIT_OPEN = "capability.circuit_open"
    INPUT_INVALID = "input.invalid"
    OUTPUT_INVALID = "output.invalid"
    POLICY_INVALID = "policy.invalid"
    POLICY_DENIED = "policy.denied"
    POLICY_RATE_LIMITED = "policy.rate_limited"
    POLICY_GRANT_NOT_FOUND = "policy.grant_not_found"
    APPROVAL_INVALID = "approval.invalid"
    APPROVAL_NOT_FOUND = "approval.not_found"
    APPROVAL_REQUIRED = "approval.required"
    APPROVAL_SELF_APPROVAL = "approval.self_approval"
    APPROVAL_NOT_AUTHORIZED = "approval.not_authorized"
    APPROVAL_EXPIRED = "approval.expired"
    APPROVAL_ALREADY_DECIDED = "approval.already_decided"
    APPROVAL_CONSUMED = "approval.consumed"
    APPROVAL_REJECTED = "approval.rejected"
    APPROVAL_WITHDRAWN = "approval.withdrawn"
    APPROVAL_DIGEST_MISMATCH = "approval.digest_mismatch"
    APPROVAL_BAD_SIGNATURE = "approval.bad_signature"
    APPROVAL_UNAUTHENTICATED = "approval.unauthenticated"
    EXECUTION_FAILED = "execution.failed"
    EXECUTION_TIMEOUT = "execution.timeout"
    EXECUTION_REFUSED = "execution.refused"
    EXECUTION_IN_PROGRESS = "execution.in_progress"
    HOOK_FAILED = "execution.hook_failed"
    IDEMPOTENCY_CONFLICT = "input.idempotency_conflict"
    WORKFLOW_INVALID = "workflow.invalid"
    WORKFLOW_NOT_FOUND = "workflow.not_found"
    WORKFLOW_RUN_NOT_FOUND = "workflow.run_not_found"
    WORKFLOW_STEP_FAILED = "workflow.step_failed"
    WORKFLOW_COMPENSATION_FAILED = "workflow.compensation_failed"
    WORKFLOW_BAD_STATE = "workflow.bad_state"
    WORKFLOW_FINGERPRINT_DRIFT = "workflow.fingerprint_drift"
    WORKFLOW_TEMPLATE_FAILED = "workflow.template_failed"
    WORKFLOW_CANCELLED = "workflow.cancelled"
    WORKFLOW_LEASE_LOST = "workflow.lease_lost"
    STORAGE_FAILED = "storage.failed"
    STORAGE_SCHEMA_MISMATCH = "storage.schema_mismatch"
    STORAGE_NOT_EMPTY = "storage.not_empty"
    STORAGE_IN_USE = "storage.in_use"
    STORAGE_COMMIT_UNCONFIRMED = "storage.commit_unconfirmed"
    AUDIT_FAILED = "audit.failed"
    AUDIT_CHAIN_BROKEN = "audit.chain_broken"
    AUDIT_SINK_UNAVAILABLE = "audit.sink_unavailable"
    CONFIG_INVALID = "config.invalid"
    CONFIG_PROJECT_MISSING = "config.project_missing"
    CONFIG_MISSING_EXTRA = "config.missing_extra"
    SECRET_NOT_FOUND = "config.secret_not_found"  # noqa: S105  # an error code, not a secret
    PLUGIN_INVALID = "plugin.invalid"
    PLUGIN_NOT_FOUND = "plugin.not_found"
    PLUGIN_IMPORT_FAILED = "plugin.import_failed"
    PLUGIN_VERSION_UNSUPPORTED = "plugin.version_unsupported"
    PLUGIN_CONFLICT = "plugin.conflict"
    PLUGIN_PERMISSION_DENIED = "plugin.permission_denied"
    FINDINGS_INVALID = "findings.invalid"
    FINDINGS_PARSE_FAILED = "findings.parse_failed"
    FINDINGS_UNKNOWN_FORMAT = "findings.unknown_format"
    FINDINGS_NOT_FOUND = "findings.not_found"
    FINDINGS_SCANNER_MISSING = "findings.scanner_missing"
    FINDINGS_TARGET_NOT_REGISTERED = "findings.target_not_registered"
    INGEST_FAILED = "ingest.failed"
    INGEST_KEY_MISSING = "ingest.key_missing"
    INGEST_KEY_INVALID = "ingest.key_invalid"
    INGEST_INDEX_TAMPERED = "ingest.index_tampered"
    INGEST_REPO_NOT_FOUND = "ingest.repo_not_found"
    TRANSPORT_FAILED = "transport.failed"
    TRANSPORT_UNAUTHENTICATED = "transport.unauthenticated"
    TRANSPORT_NOT_FOUND = "transport.not_found"
    TRANSPORT_UPSTREAM_UNAVAILABLE = "transport.upstream_unavailable"
    TRANSPORT_UPSTREAM_TOOL_FAILED = "transport.upstream_tool_failed"
    TRANSPORT_UPSTREAM_DRIFT = "transport.upstream_drift"
    TRANSPORT_FORBIDDEN = "transport.forbidden"
    TRANSPORT_TOO_LARGE = "transport.too_large"
    TRANSPORT_RATE_LIMITED = "transport.rate_limited"
    TRANSPORT_METHOD_NOT_ALLOWED = "transport.method_not_allowed"


class FieldError(dict[str, JsonValue]):
    """One structured validation problem: path, code, message, expected, received.

    A plain dict so it crosses JSON boundaries (API, MCP, audit) without conversion.
    """

    def __init__(
        self,
        *,
        path: str,
        code: str,
        message: str,
        expected: JsonValue = None,
        received: JsonValue = None,
    ) -> None:
        super().__init__(
            path=path, code=code, message=message, expected=expected, received=received
        )

    @property
    def path(self) -> str:
        """Dotted location of the bad value (``""`` for the whole object)."""
        return str(self["path"])

    @property
    def code(self) -> str:
        """Short constraint name such as ``min``, ``pattern`` or ``required``."""
        return str(self["code"])


class AifrError(Exception):
    """Root of every error aifr raises on purpose."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]  # instance override of the class default
        self.details: dict[str, JsonValue] = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code.value!r}, message={self.message!r})"

    def to_payload(self) -> dict[str, JsonValue]:
        """The single JSON shape used by the API, MCP, CLI and audit records."""
        return error_payload(self)


class CapabilityError(AifrError):
    """A capability spec is malformed, or a capability reference is invalid."""

    code = ErrorCode.CAPABILITY_INVALID


class RiskConsistencyError(CapabilityError):
    """A spec breaks one or more of the Risk Consistency Check rules."""

    code = ErrorCode.CAPABILITY_RISK_INCONSISTENT

    def __init__(self, *, capability_id: str, violations: list[str]) -> None:
        super().__init__(
            "\n".join(violations), capability_id=capability_id, violations=list(violations)
        )
        self.violations = list(violations)


class CapabilityNotFoundError(CapabilityError):
    """No capability with the given id (or pinned version) is registered."""

    code = ErrorCode.CAPABILITY_NOT_FOUND


class DuplicateCapabilityError(CapabilityError):
    """The same capability id and version was registered twice."""

    code = ErrorCode.CAPABILITY_DUPLICATE


class CircuitOpenError(CapabilityError):
    """A capability failed repeatedly and its circuit breaker is open."""

    code = ErrorCode.CIRCUIT_OPEN


class InputValidationError(AifrError):
    """Inputs do not match a capability's input schema."""

    code = ErrorCode.INPUT_INVALID

    def __init__(self, message: str, *, errors: list[FieldError], **details: Any) -> None:
        super().__init__(message, errors=[dict(e) for e in errors], **details)
        self.errors = errors


class OutputValidationError(InputValidationError):
    """A handler returned a value that does not match its output schema."""

    code = ErrorCode.OUTPUT_INVALID


class PolicyError(AifrError):
    """A policy cannot be loaded or evaluated; names the file, line and field."""

    code = ErrorCode.POLICY_INVALID


class PolicyDeniedError(PolicyError):
    """The policy engine answered DENY for a request."""

    code = ErrorCode.POLICY_DENIED


class ApprovalError(AifrError):
    """An approval cannot be created, decided or consumed."""

    code = ErrorCode.APPROVAL_INVALID


class ExecutionError(AifrError):
    """A handler raised an exception while running."""

    code = ErrorCode.EXECUTION_FAILED


class ExecutionTimeoutError(ExecutionError):
    """A handler ran past its timeout and was abandoned."""

    code = ErrorCode.EXECUTION_TIMEOUT


class SandboxRefusalError(ExecutionError):
    """A confinement rule refused the action; ``details['rule']`` names the rule."""

    code = ErrorCode.EXECUTION_REFUSED

    def __init__(self, message: str, *, rule: str, **details: Any) -> None:
        super().__init__(message, rule=rule, **details)
        self.rule = rule


class WorkflowError(AifrError):
    """A workflow spec is malformed or a run cannot proceed."""

    code = ErrorCode.WORKFLOW_INVALID


class StorageError(AifrError):
    """The state database failed or holds data this version cannot read."""

    code = ErrorCode.STORAGE_FAILED


class UnconfirmedCommitError(StorageError):
    """A write whose rows came back was never confirmed committed (its outcome is unknown).

    Raised when a workflow step's deferred commit is settled (see
    ``PostgresDatabase.deferring``): the step's effect happened and its result came back,
    but the server refused the commit or the connection broke before confirming it. The
    run stops before anything else happens, as it would have had the step's write failed
    outright; its lease then lapses or is given back, and the run resumes from what is
    stored. The runtime never turns it into a step's outcome.
    """

    code = ErrorCode.STORAGE_COMMIT_UNCONFIRMED


class AuditError(AifrError):
    """The audit ledger cannot append, verify or export."""

    code = ErrorCode.AUDIT_FAILED


class ConfigError(AifrError):
    """A setting, the project layout or an optional extra is invalid or missing."""

    code = ErrorCode.CONFIG_INVALID


class PluginError(AifrError):
    """A plugin cannot be discovered, validated or loaded."""

    code = ErrorCode.PLUGIN_INVALID


class PluginPermissionError(PluginError):
    """A plugin's call reaches a path, host or command its manifest did not ask for."""

    code = ErrorCode.PLUGIN_PERMISSION_DENIED

    def __init__(self, message: str, *, plugin: str, permission: str, **details: Any) -> None:
        super().__init__(message, plugin=plugin, permission=permission, **details)
        self.plugin = plugin
        self.permission = permission


class FindingsError(AifrError):
    """Scanner output or a finding is invalid."""

    code = ErrorCode.FINDINGS_INVALID


class IngestError(AifrError):
    """A workspace or archive cannot be ingested."""

    code = ErrorCode.INGEST_FAILED


class TransportError(AifrError):
    """A transport (MCP, HTTP) cannot serve a request."""

    code = ErrorCode.TRANSPORT_FAILED


# One table: code family -> (HTTP status, CLI exit code). Exit codes: 1 generic failure,
# 2 bad usage/input, 3 denied, 4 pending approval, 5 not found, 6 timeout. Only
# approval.required is "pending": an expired, rejected, consumed or already decided
# approval is a failure, so a script never reads "still waiting" into it.
_FAMILY_STATUS: dict[str, tuple[int, int]] = {
    "capability": (422, 2),
    "input": (422, 2),
    "output": (502, 1),
    "policy": (403, 3),
    "approval": (409, 1),
    "execution": (500, 1),
    "workflow": (409, 1),
    "storage": (500, 1),
    "audit": (500, 1),
    "config": (400, 2),
    "plugin": (400, 2),
    "findings": (422, 2),
    "ingest": (422, 1),
    "transport": (502, 1),
    "internal": (500, 1),
}
_CODE_STATUS: dict[ErrorCode, tuple[int, int]] = {
    ErrorCode.CAPABILITY_NOT_FOUND: (404, 5),
    ErrorCode.CAPABILITY_VERSION_NOT_FOUND: (404, 5),
    ErrorCode.APPROVAL_NOT_FOUND: (404, 5),
    ErrorCode.POLICY_GRANT_NOT_FOUND: (404, 5),
    ErrorCode.WORKFLOW_NOT_FOUND: (404, 5),
    ErrorCode.WORKFLOW_RUN_NOT_FOUND: (404, 5),
    ErrorCode.POLICY_INVALID: (400, 2),
    ErrorCode.POLICY_RATE_LIMITED: (429, 3),
    ErrorCode.CIRCUIT_OPEN: (503, 1),
    ErrorCode.EXECUTION_TIMEOUT: (504, 6),
    ErrorCode.EXECUTION_REFUSED: (403, 3),
    ErrorCode.EXECUTION_IN_PROGRESS: (409, 1),
    ErrorCode.IDEMPOTENCY_CONFLICT: (409, 2),
    ErrorCode.STORAGE_NOT_EMPTY: (409, 2),
    ErrorCode.STORAGE_IN_USE: (409, 1),
    ErrorCode.APPROVAL_REQUIRED: (202, 4),
    ErrorCode.APPROVAL_SELF_APPROVAL: (403, 3),
    ErrorCode.APPROVAL_NOT_AUTHORIZED: (403, 3),
    ErrorCode.TRANSPORT_UNAUTHENTICATED: (401, 3),
    ErrorCode.TRANSPORT_NOT_FOUND: (404, 2),
    ErrorCode.TRANSPORT_FORBIDDEN: (403, 3),
    ErrorCode.TRANSPORT_TOO_LARGE: (413, 2),
    ErrorCode.TRANSPORT_RATE_LIMITED: (429, 1),
    ErrorCode.TRANSPORT_METHOD_NOT_ALLOWED: (405, 2),
    ErrorCode.APPROVAL_UNAUTHENTICATED: (401, 3),
    ErrorCode.PLUGIN_NOT_FOUND: (404, 5),
    ErrorCode.PLUGIN_PERMISSION_DENIED: (403, 3),
    ErrorCode.FINDINGS_NOT_FOUND: (404, 5),
    ErrorCode.FINDINGS_SCANNER_MISSING: (424, 1),
    ErrorCode.FINDINGS_TARGET_NOT_REGISTERED: (403, 3),
    ErrorCode.INGEST_KEY_MISSING: (400, 2),
    ErrorCode.INGEST_KEY_INVALID: (400, 2),
    ErrorCode.INGEST_REPO_NOT_FOUND: (404, 5),
}


def _status(code: ErrorCode) -> tuple[int, int]:
    if code in _CODE_STATUS:
        return _CODE_STATUS[code]
    return _FAMILY_STATUS.get(code.value.split(".", 1)[0], (500, 1))


def http_status_for(code: ErrorCode) -> int:
    """HTTP status the REST API answers for an error code."""
    return _status(code)[0]


def exit_code_for(code: ErrorCode) -> int:
    """Process exit code the CLI uses for an error code."""
    return _status(code)[1]


def error_payload(error: AifrError) -> dict[str, JsonValue]:
    """Turn an error into the one payload shape: ``{ok, error: {code, message, details}}``."""
    return {
        "ok": False,
        "error": {
            "code": error.code.value,
            "type": type(error).__name__,
            "message": error.message,
            "details": error.details,
        },
    }
